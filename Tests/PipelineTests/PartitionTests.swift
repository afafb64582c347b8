import Pipeline
import XCTest

final class PartitionTests: XCTestCase {
    func testEqualBlocksSplitEvenlyWithEmbeddingFirstAndHeadLast() throws {
        let costs = [0.1] + Array(repeating: 1.0, count: 8) + [0.2]
        XCTAssertEqual(try Partition.balanced(unitCosts: costs, stages: 4), [0..<3, 3..<5, 5..<7, 7..<10])
        XCTAssertEqual(try Partition.balanced(unitCosts: costs, stages: 1), [0..<10])
    }

    func testAnExpensiveHeadGetsFewerBlocksBesideIt() throws {
        let costs = [0.0, 1, 1, 1, 1, 3]
        XCTAssertEqual(try Partition.balanced(unitCosts: costs, stages: 2), [0..<4, 4..<6])
    }

    func testMoreStagesThanBlocksIsAClearError() {
        XCTAssertThrowsError(try Partition.balanced(unitCosts: [0, 1, 1, 0], stages: 3)) { error in
            XCTAssertEqual("\(error)", "3 pipeline stages need at least 3 blocks; the model has 2")
        }
    }

    /// The binary-searched DP gives exactly the partitions of the plain O(parts · n²) DP, ties
    /// (equal blocks, zero costs) included, and stays quick for a model of 100 000 blocks.
    func testFastPartitionMatchesTheExhaustiveDynamicProgram() throws {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<300 {
            let blocks = Int.random(in: 1...12, using: &generator)
            let costs = (0..<(blocks + 2)).map { _ in Double(Int.random(in: 0...2, using: &generator)) }
            for stages in 1...min(blocks, 5) {
                XCTAssertEqual(try Partition.balanced(unitCosts: costs, stages: stages),
                               exhaustive(costs, stages: stages), "costs \(costs), \(stages) stages")
            }
        }
        let large = try Partition.balanced(unitCosts: Array(repeating: 1.0, count: 100_002), stages: 4)
        XCTAssertEqual(large.map(\.count).reduce(0, +), 100_002)
        XCTAssertLessThanOrEqual(large.map(\.count).max() ?? 0, 25_001)
    }

    /// The reference: every cut tried, the first of equally good ones kept.
    private func exhaustive(_ unitCosts: [Double], stages: Int) -> [Range<Int>] {
        let blocks = unitCosts.count - 2
        var costs = Array(unitCosts[1...blocks])
        costs[0] += unitCosts[0]
        costs[blocks - 1] += unitCosts[blocks + 1]
        let n = costs.count
        var prefix = [0.0]
        for cost in costs { prefix.append(prefix.last! + cost) }
        var best = Array(repeating: Array(repeating: Double.infinity, count: n + 1), count: stages + 1)
        var cut = Array(repeating: Array(repeating: 0, count: n + 1), count: stages + 1)
        best[0][0] = 0
        for k in 1...stages {
            for i in k...n {
                for j in (k - 1)..<i where max(best[k - 1][j], prefix[i] - prefix[j]) < best[k][i] {
                    best[k][i] = max(best[k - 1][j], prefix[i] - prefix[j])
                    cut[k][i] = j
                }
            }
        }
        var ranges: [Range<Int>] = []
        var end = n
        for k in stride(from: stages, to: 0, by: -1) {
            ranges.append(cut[k][end]..<end)
            end = cut[k][end]
        }
        return ranges.reversed().enumerated().map { index, range in
            (index == 0 ? 0 : range.lowerBound + 1)..<(index == stages - 1 ? unitCosts.count : range.upperBound + 1)
        }
    }
}
