import XCTest
@testable import Schedules

final class ScheduleTextTests: XCTestCase {
    func testEveryGeneratedScheduleRoundTrips() throws {
        for kind in ScheduleKind.allCases {
            for ranks in [1, 2, 3, 4] {
                for twoBP in [false, true] {
                    let schedule = try Schedule.make(kind: kind, ranks: ranks, twoBP: twoBP)
                    XCTAssertEqual(try Schedule(text: schedule.text), schedule, "\(kind) on \(ranks)")
                    let lowered = schedule.lowered()
                    XCTAssertEqual(try Schedule(text: lowered.text), lowered, "lowered \(kind) on \(ranks)")
                }
            }
        }
    }

    func testFullForm() throws {
        let schedule = try Schedule.make(kind: .oneFOneB1, ranks: 2, twoBP: true)
        XCTAssertEqual(schedule.text, """
            name: 1f1b-1+2bp
            micro-batches: 2
            placement: 0 | 1
            rank 0: F0 F1 I0 I1 W0 W*
            rank 1: F0 I0 F1 I1 W*

            """)
        let v = try Schedule.make(kind: .zeroBubbleV, ranks: 2, microBatches: 1)
        XCTAssertTrue(v.text.contains("placement: 0 3 | 1 2\n"), v.text)
    }

    func testShortFormInfersTheRest() throws {
        let schedule = try Schedule(text: """
            # two ranks, two chunks each, looped placement inferred from `1F0`
            F0 1F0 1B0 B0

            F0 1F0 1B0 B0
            """)
        XCTAssertEqual(schedule.name, "custom")
        XCTAssertEqual(schedule.ranks, 2)
        XCTAssertEqual(schedule.chunksPerRank, 2)
        XCTAssertEqual(schedule.microBatches, 1)
        XCTAssertEqual(schedule.placement, [[0, 2], [1, 3]])
        XCTAssertEqual(schedule.actions[1], [Action(.forward, 0), Action(.forward, 0, chunk: 1),
                                             Action(.backwardFull, 0, chunk: 1), Action(.backwardFull, 0)])
    }

    func testEmptyRankLine() throws {
        let schedule = try Schedule(text: "micro-batches: 1\nplacement: 0 | 1\nrank 0: F0 B0\nrank 1:\n")
        XCTAssertEqual(schedule.actions, [[Action(.forward, 0), Action(.backwardFull, 0)], []])
        XCTAssertEqual(try Schedule(text: schedule.text), schedule)
    }

    func testParseErrorsNameTheLine() {
        func message(_ text: String) -> String {
            do {
                _ = try Schedule(text: text)
                return "accepted"
            } catch {
                XCTAssertEqual((error as? ScheduleError)?.reason, .parse)
                return "\(error)"
            }
        }
        XCTAssertEqual(message("F0 X1"), "schedule text, line 1: 'X1' is not an action (expected e.g. F3, 1I0, W*, SEND_F2)")
        XCTAssertEqual(message("F0\nrank 3: F0"), "schedule text, line 2: expected rank 1 next, got rank 3")
        XCTAssertEqual(message("speed: 3\nF0"), "schedule text, line 1: unknown key 'speed' (expected name, micro-batches, placement or rank N)")
        XCTAssertEqual(message("micro-batches: many\nF0"), "schedule text, line 1: micro-batches must be a whole number, got 'many'")
        XCTAssertEqual(message("placement: 0 | 1\nF0"), "schedule text: placement has 2 ranks but there are 1 rank lines")
        XCTAssertEqual(message("placement: 0 1 | 2\nF0\nF0"), "schedule text: every rank in the placement must hold the same number (at least 1) of chunks")
        XCTAssertEqual(message("# nothing"), "schedule text has no rank lines")
        XCTAssertEqual(message("F0 I*"), "schedule text, line 1: 'I*' is not an action (expected e.g. F3, 1I0, W*, SEND_F2)")
    }
}
