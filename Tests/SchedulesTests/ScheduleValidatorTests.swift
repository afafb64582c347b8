import XCTest
@testable import Schedules

final class ScheduleValidatorTests: XCTestCase {
    /// Validates `text` expecting a `ScheduleError`; returns it.
    func rejection(_ text: String, file: StaticString = #filePath, line: UInt = #line) throws -> ScheduleError {
        let schedule = try Schedule(text: text)
        do {
            try schedule.validate()
        } catch let error as ScheduleError {
            return error
        }
        XCTFail("the validator accepted\n\(text)", file: file, line: line)
        return ScheduleError(.parse, "accepted")
    }

    func testAcceptsAHandWrittenSchedule() throws {
        XCTAssertNoThrow(try Schedule(text: """
            F0 F1 B0 B1
            F0 B0 F1 B1
            """).validate())
    }

    func testMissingMicroBatchMarksTheRank() throws {
        let error = try rejection("""
            micro-batches: 3
            F0 F1 F2 B0 B1 B2
            F0 B0 F1 B1
            """)
        XCTAssertEqual(error.reason, .missing)
        XCTAssertEqual(error.rows, [1])
        XCTAssertTrue(error.message.contains("stage 1 (rank 1, chunk 0) never runs F2"), error.message)
        XCTAssertTrue(error.message.contains("> rank 1"), "the grid marks the rank's row:\n\(error.message)")
    }

    func testRepeatedForwardMarksBothCells() throws {
        let error = try rejection("""
            F0 F1 F1 B0 B1
            F0 B0 F1 B1
            """)
        XCTAssertEqual(error.reason, .repeated)
        XCTAssertEqual(error.cells, [ScheduleCell(rank: 0, step: 1), ScheduleCell(rank: 0, step: 2)])
        XCTAssertTrue(error.message.contains(">F1<"), error.message)
    }

    func testWeightBeforeItsInputGradient() throws {
        let error = try rejection("""
            F0 F1 I0 W1 I1 W0
            F0 I0 F1 I1 W*
            """)
        XCTAssertEqual(error.reason, .dependency)
        XCTAssertEqual(error.cells, [ScheduleCell(rank: 0, step: 3)])
        XCTAssertTrue(error.message.contains("W1 at rank 0, step 3 runs on stage 0 (rank 0, chunk 0) before I1"), error.message)
        XCTAssertTrue(error.message.contains(">W1<"), error.message)
    }

    func testWeightAfterFusedBackwardRunsPTwoTwice() throws {
        let error = try rejection("""
            F0 B0 W0
            """)
        XCTAssertEqual(error.reason, .repeated)
    }

    func testMissingWeightPass() throws {
        let error = try rejection("""
            F0 F1 I0 I1 W0
            F0 I0 F1 I1 W*
            """)
        XCTAssertEqual(error.reason, .missing)
        XCTAssertTrue(error.message.contains("never runs the W of micro-batch 1"), error.message)
    }

    func testConcatenatedWeightWithNothingPendingIsRejected() throws {
        let error = try rejection("""
            F0 I0 W* W*
            """)
        XCTAssertEqual(error.reason, .dependency)
        XCTAssertEqual(error.cells, [ScheduleCell(rank: 0, step: 3)])
        XCTAssertTrue(error.message.contains("nothing pending"), error.message)
    }

    func testBackwardBeforeItsForward() throws {
        let error = try rejection("""
            B0 F0
            F0 B0
            """)
        XCTAssertEqual(error.reason, .dependency)
        XCTAssertEqual(error.cells, [ScheduleCell(rank: 0, step: 0)])
    }

    /// zb-v's turn: stage 2 (rank 1, chunk 1) needs F of stage 1 (rank 1, chunk 0) on the same rank.
    func testSameRankStageOrder() throws {
        let error = try rejection("""
            placement: 0 3 | 1 2
            F0 1F0 1B0 B0
            1F0 F0 B0 1B0
            """)
        XCTAssertEqual(error.reason, .dependency)
        XCTAssertEqual(error.cells, [ScheduleCell(rank: 1, step: 0)])
        XCTAssertTrue(error.message.contains("before F0 of stage 1, which is on this rank (chunk 0)"), error.message)
    }

    func testCrossRankCycleIsADependencyError() throws {
        // Rank 0 waits for the gradient of micro-batch 0 before running F1;
        // rank 1 waits for F1 before running the backward of micro-batch 0.
        let error = try rejection("""
            F0 B0 F1 B1
            F0 F1 B0 B1
            """)
        XCTAssertEqual(error.reason, .dependency)
        XCTAssertTrue(error.message.contains("cycle"), error.message)
        XCTAssertEqual(Set(error.cells), [ScheduleCell(rank: 0, step: 1), ScheduleCell(rank: 1, step: 1)])
    }

    func testDeadlockingReceiveOrder() throws {
        // Compute order is fine; the hand-lowered program waits for the
        // gradient before sending the activation it depends on.
        let error = try rejection("""
            F0 RECV_B0 SEND_F0 B0
            RECV_F0 F0 B0 SEND_B0
            """)
        XCTAssertEqual(error.reason, .deadlock)
        XCTAssertEqual(Set(error.cells), [ScheduleCell(rank: 0, step: 1), ScheduleCell(rank: 1, step: 0)])
        XCTAssertTrue(error.message.contains("deadlock: ranks 0, 1"), error.message)
        XCTAssertTrue(error.message.contains("rank 0 blocks at step 1 on RECV_B0, waiting for the gradient of micro-batch 0 for stage 0, sent by rank 1 at step 3"), error.message)
        XCTAssertTrue(error.message.contains(">RECV_B0<"), error.message)
        XCTAssertTrue(error.message.contains(">RECV_F0<"), error.message)
    }

    func testReceiveThatNobodySends() throws {
        let error = try rejection("""
            F0 RECV_B0 B0
            RECV_F0 F0 B0 SEND_B0
            """)
        // Rank 0's F0 is never sent: the completeness check names it before any simulation.
        XCTAssertEqual(error.reason, .communication)
        XCTAssertTrue(error.message.contains("never sends F0's activation"), error.message)
    }

    func testLoweredForwardWithoutItsReceive() throws {
        let error = try rejection("""
            F0 SEND_F0 RECV_B0 B0
            F0 B0 SEND_B0
            """)
        XCTAssertEqual(error.reason, .dependency)
        XCTAssertTrue(error.message.contains("no RECV_F0"), error.message)
    }

    func testCommunicationWithinARankIsRejected() throws {
        let error = try rejection("""
            placement: 0 1
            F0 SEND_F0 1F0 1B0 B0
            """)
        XCTAssertEqual(error.reason, .communication)
    }

    func testOutOfRange() throws {
        let error = try rejection("""
            micro-batches: 1
            F0 F1 B0
            """)
        XCTAssertEqual(error.reason, .outOfRange)
        XCTAssertEqual(error.cells, [ScheduleCell(rank: 0, step: 1)])
        let placement = try rejection("""
            placement: 0 | 0
            F0 B0
            F0 B0
            """)
        XCTAssertEqual(placement.reason, .outOfRange)
    }

    func testGridMarksTheFaultyCell() throws {
        let schedule = try Schedule(text: """
            F0 F1 B0 B1
            F0 B0 F1 B1
            """)
        XCTAssertEqual(schedule.grid(marking: [ScheduleCell(rank: 1, step: 2)]), """
                      0    1    2    3
              rank 0  F0   F1   B0   B1
              rank 1  F0   B0  >F1<  B1
            """)
        XCTAssertEqual(schedule.grid(markingRows: [0]).split(separator: "\n")[1], "> rank 0  F0   F1   B0   B1")
    }

    func testDeadlockMessageInFull() throws {
        let error = try rejection("""
            name: hand-lowered
            F0 RECV_B0 SEND_F0 B0
            RECV_F0 F0 B0 SEND_B0
            """)
        XCTAssertEqual(error.description, """
            hand-lowered: deadlock: ranks 0, 1 block on receives that can never complete
              rank 0 blocks at step 1 on RECV_B0, waiting for the gradient of micro-batch 0 for stage 0, sent by rank 1 at step 3
              rank 1 blocks at step 0 on RECV_F0, waiting for the activation of micro-batch 0 for stage 1, sent by rank 0 at step 2

                      0         1         2         3
              rank 0  F0       >RECV_B0<  SEND_F0   B0
              rank 1 >RECV_F0<  F0        B0        SEND_B0
            """)
    }
}
