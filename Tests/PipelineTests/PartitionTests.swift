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
}
