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
    static func minimiseLargestPart(_ costs: [Double], parts: Int) -> [Range<Int>] {
        let n = costs.count
        var prefix = [0.0]
        for cost in costs { prefix.append(prefix.last! + cost) }
        // best[k][i]: smallest achievable largest part splitting costs[0..<i] into k parts.
        var best = Array(repeating: Array(repeating: Double.infinity, count: n + 1), count: parts + 1)
        var cut = Array(repeating: Array(repeating: 0, count: n + 1), count: parts + 1)
        best[0][0] = 0
        for k in 1...parts {
            for i in k...n {
                for j in (k - 1)..<i {
                    let candidate = Swift.max(best[k - 1][j], prefix[i] - prefix[j])
                    if candidate < best[k][i] {
                        best[k][i] = candidate
                        cut[k][i] = j
                    }
                }
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
