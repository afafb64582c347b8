import Tensor

/// Splits a model's units (embedding, blocks, head) into contiguous virtual stages.
///
/// The embedding always joins the first stage and the head the last; every
/// stage gets at least one block, and the blocks are placed to minimise the
/// most expensive stage (the pipeline runs at the pace of its slowest stage).
public enum Partition {
    /// `unitCosts` has one entry per unit: [embedding, block 1 ... block L, head].
    /// Returns the unit range of each of `stages` virtual stages.
    public static func balanced(unitCosts: [Double], stages: Int) throws -> [Range<Int>] {
        let blocks = unitCosts.count - 2
        guard stages >= 1 else { throw TwoBPError("the number of stages must be at least 1, got \(stages)") }
        guard blocks >= stages else {
            throw TwoBPError("\(stages) pipeline stages need at least \(stages) blocks; the model has \(blocks)")
        }
        // The embedding and head are folded into the first and last block so each stage is a run of blocks.
        var costs = Array(unitCosts[1...blocks])
        costs[0] += unitCosts[0]
        costs[blocks - 1] += unitCosts[blocks + 1]
        let blockRanges = minimiseLargestPart(costs, parts: stages)
        return blockRanges.enumerated().map { index, range in
            let lower = index == 0 ? 0 : range.lowerBound + 1
            let upper = index == stages - 1 ? unitCosts.count : range.upperBound + 1
            return lower..<upper
        }
    }

    /// Linear partition by dynamic programming: `parts` non-empty contiguous runs minimising the largest sum.
    ///
    /// For a last part starting at `j`, the best split of what precedes it, `best[k - 1][j]`,
    /// never decreases with `j` (costs are not negative) and the last part's sum never increases,
    /// so the best `j` is found by binary search at their crossing: O(parts · n · log n), which
    /// keeps a config with 100 000 layers quick. Among equally good `j` the smallest is kept.
    static func minimiseLargestPart(_ costs: [Double], parts: Int) -> [Range<Int>] {
        let n = costs.count
        var prefix = [0.0]
        for cost in costs { prefix.append(prefix.last! + cost) }
        // best[k][i]: smallest achievable largest part splitting costs[0..<i] into k parts.
        var best = Array(repeating: Array(repeating: Double.infinity, count: n + 1), count: parts + 1)
        var cut = Array(repeating: Array(repeating: 0, count: n + 1), count: parts + 1)
        best[0][0] = 0
        for k in 1...parts {
            let previous = best[k - 1]
            for i in k...n {
                func last(_ j: Int) -> Double { prefix[i] - prefix[j] }
                // The first j where the preceding parts cost at least the last part.
                var low = k - 1, high = i
                while low < high {
                    let middle = (low + high) / 2
                    if previous[middle] >= last(middle) { high = middle } else { low = middle + 1 }
                }
                var value = Double.infinity
                for j in [low - 1, low] where j >= k - 1 && j < i {
                    value = Swift.min(value, Swift.max(previous[j], last(j)))
                }
                // The smallest j achieving it: the first whose last part fits under it.
                low = k - 1
                high = i - 1
                while low < high {
                    let middle = (low + high) / 2
                    if last(middle) <= value { high = middle } else { low = middle + 1 }
                }
                best[k][i] = value
                cut[k][i] = low
            }
        }
        var ranges: [Range<Int>] = []
        var end = n
        for k in stride(from: parts, to: 0, by: -1) {
            let start = cut[k][end]
            ranges.append(start..<end)
            end = start
        }
        return ranges.reversed()
    }
}
