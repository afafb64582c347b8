import XCTest
@testable import Schedules

final class ScheduleLoweringTests: XCTestCase {
    func testOneFOneBLowering() throws {
        let plain = try Schedule.make(kind: .oneFOneB1, ranks: 2).lowered()
        XCTAssertEqual(scheduleRows(plain), [
            "F0 SEND_F0 F1 SEND_F1 RECV_B0 B0 RECV_B1 B1",
            "RECV_F0 F0 B0 SEND_B0 RECV_F1 F1 B1 SEND_B1",
        ])
        // With 2BP the gradient leaves after I, before the deferred W.
        let split = try Schedule.make(kind: .oneFOneB1, ranks: 2, twoBP: true).lowered()
        XCTAssertEqual(scheduleRows(split), [
            "F0 SEND_F0 F1 SEND_F1 RECV_B0 I0 RECV_B1 I1 W0 W*",
            "RECV_F0 F0 I0 SEND_B0 RECV_F1 F1 I1 SEND_B1 W*",
        ])
    }

    func testMiddleRankReceivesAndSendsBothWays() throws {
        let lowered = try Schedule.make(kind: .gpipe, ranks: 3, microBatches: 1).lowered()
        XCTAssertEqual(scheduleRows(lowered), [
            "F0 SEND_F0 RECV_B0 B0",
            "RECV_F0 F0 SEND_F0 RECV_B0 B0 SEND_B0",
            "RECV_F0 F0 B0 SEND_B0",
        ])
    }

    func testSingleRankNeedsNoCommunication() throws {
        for kind in ScheduleKind.allCases {
            let schedule = try Schedule.make(kind: kind, ranks: 1)
            XCTAssertEqual(schedule.lowered(), schedule, "\(kind)")
            XCTAssertFalse(schedule.lowered().isLowered)
        }
    }

    func testStripAndRelowerAreInverse() throws {
        for kind in ScheduleKind.allCases {
            let schedule = try Schedule.make(kind: kind, ranks: 4, twoBP: true)
            let lowered = schedule.lowered()
            XCTAssertTrue(lowered.isLowered)
            XCTAssertEqual(lowered.withoutCommunication(), schedule)
            XCTAssertEqual(lowered.lowered(), lowered, "lowering twice changes nothing")
        }
    }

    /// One send and one receive per cross-rank edge and micro-batch.
    func testMessageCounts() throws {
        let ranks = 4, microBatches = 8
        let interleaved = try Schedule.make(kind: .interleaved, ranks: ranks, microBatches: microBatches).lowered()
        let edges = interleaved.virtualStages - 1
        func total(_ kind: ActionKind, _ schedule: Schedule) -> Int {
            schedule.actions.joined().filter { $0.kind == kind }.count
        }
        for kind in [ActionKind.sendActivation, .receiveActivation, .sendGradient, .receiveGradient] {
            XCTAssertEqual(total(kind, interleaved), edges * microBatches, "\(kind)")
        }
        // zb-v's turn on the last rank is local: one edge fewer.
        let v = try Schedule.make(kind: .zeroBubbleV, ranks: ranks, microBatches: microBatches).lowered()
        XCTAssertEqual(total(.sendActivation, v), (v.virtualStages - 2) * microBatches)
        XCTAssertEqual(total(.receiveGradient, v), (v.virtualStages - 2) * microBatches)
    }
}
