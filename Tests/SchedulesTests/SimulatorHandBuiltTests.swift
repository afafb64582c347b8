import XCTest
@testable import Schedules

/// Schedules written out by hand from their textbook definitions, so the
/// simulator's tests do not depend on the generators they are meant to check.
enum HandBuilt {
    /// All forwards, then all backwards (fused B, or I then one concatenated `W*` with 2BP).
    static func gpipe(ranks: Int, microBatches: Int, twoBP: Bool = false) -> Schedule {
        let actions = (0..<ranks).map { _ -> [Action] in
            let forwards = (0..<microBatches).map { Action(.forward, $0) }
            let backwards = (0..<microBatches).map { Action(twoBP ? .backwardInput : .backwardFull, $0) }
            return forwards + backwards + (twoBP ? [Action(.backwardWeight, nil)] : [])
        }
        return schedule("gpipe", ranks: ranks, microBatches: microBatches, actions: actions)
    }

    /// 1F1B: rank r warms up with p-1-r forwards, then alternates F and
    /// backward, then cools down. With 2BP (the paper's variant) the backward
    /// is I, each cool-down I is followed by one W, and the rest of p2 runs
    /// as one `W*` at the end.
    static func oneFOneB(ranks: Int, microBatches: Int, twoBP: Bool = false) -> Schedule {
        let actions = (0..<ranks).map { rank -> [Action] in
            let warmUp = min(ranks - 1 - rank, microBatches)
            var list = (0..<warmUp).map { Action(.forward, $0) }
            let backward: ActionKind = twoBP ? .backwardInput : .backwardFull
            for steady in 0..<(microBatches - warmUp) {
                list.append(Action(.forward, warmUp + steady))
                list.append(Action(backward, steady))
            }
            var weightsDone = 0
            for coolDown in (microBatches - warmUp)..<microBatches {
                list.append(Action(backward, coolDown))
                if twoBP {
                    list.append(Action(.backwardWeight, weightsDone))
                    weightsDone += 1
                }
            }
            if twoBP { list.append(Action(.backwardWeight, nil)) }
            return list
        }
        return schedule(twoBP ? "1f1b-2bp" : "1f1b", ranks: ranks, microBatches: microBatches, actions: actions)
    }

    /// A schedule from its text form, one line per rank (`F0 F1 I0 W0 ...`).
    static func parse(_ lines: [String], microBatches: Int, name: String = "hand") -> Schedule {
        let actions = lines.map { line in line.split(separator: " ").map { Action(String($0))! } }
        return schedule(name, ranks: lines.count, microBatches: microBatches, actions: actions)
    }

    static func schedule(_ name: String, ranks: Int, microBatches: Int, actions: [[Action]]) -> Schedule {
        Schedule(name: name, ranks: ranks, chunksPerRank: 1, microBatches: microBatches,
                 placement: Schedule.loopedPlacement(ranks: ranks, chunksPerRank: 1), actions: actions)
    }

    static let equalCosts = CostModel.uniform(forward: 1, backwardInput: 1, backwardWeight: 1)
}

/// The hand-built schedules themselves are sane, or the tests built on them mean nothing.
final class SimulatorHandBuiltTests: XCTestCase {
    func testHandBuiltSchedulesRunEveryPieceOfWorkOnce() throws {
        for schedule in [HandBuilt.gpipe(ranks: 4, microBatches: 8), HandBuilt.gpipe(ranks: 4, microBatches: 8, twoBP: true),
                         HandBuilt.oneFOneB(ranks: 4, microBatches: 8), HandBuilt.oneFOneB(ranks: 4, microBatches: 8, twoBP: true)] {
            let timeline = try Simulator.simulate(schedule, costs: HandBuilt.equalCosts)
            for rank in 0..<schedule.ranks {
                XCTAssertEqual(timeline.busyTime(rank: rank), 3 * Double(schedule.microBatches), accuracy: 1e-9, "\(schedule.name) rank \(rank)")
            }
        }
    }
}
