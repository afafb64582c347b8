import XCTest
@testable import Schedules

final class ScheduleWeightCoverageTests: XCTestCase {
    func testConcatenatedWeightCoversWhatIsPending() throws {
        let schedule = try Schedule.make(kind: .oneFOneB1, ranks: 4, microBatches: 4, twoBP: true)
        // Rank 1: F0 F1 F2 I0 F3 I1 I2 W0 I3 W1 W*
        XCTAssertEqual(schedule.weightPassCoverage(rank: 1), [7: [0], 9: [1], 10: [2, 3]])
        // The last rank concatenates every micro-batch.
        XCTAssertEqual(schedule.weightPassCoverage(rank: 3), [8: [0, 1, 2, 3]])
        let interleaved = try Schedule.make(kind: .interleaved, ranks: 2, microBatches: 2, twoBP: true)
        // Rank 1: F0 F1 1F0 1I0 1F1 1I1 I0 1W0 I1 1W1 W*
        XCTAssertEqual(interleaved.weightPassCoverage(rank: 1), [7: [0], 9: [1], 10: [0, 1]])
        XCTAssertEqual(try Schedule.make(kind: .gpipe, ranks: 2).weightPassCoverage(rank: 0), [:])
    }
}
