import XCTest
@testable import Schedules

/// The bubble and memory claims of the papers, measured by the simulator on
/// the generators, with F = I = W = 1 (B = 2) and free communication.
///
/// "Idle" of a rank is step time minus its busy time, the step running from
/// the first start to the last end over all ranks. "Idle inside its span" is
/// the part of that between the rank's own first start and last end: what a
/// steady stream of steps could not hide.
final class SimulatorClosedFormTests: XCTestCase {
    private let costs = HandBuilt.equalCosts
    private let tolerance = 1e-9

    private func idle(_ timeline: Timeline, rank: Int) -> Double {
        timeline.stepTime - timeline.busyTime(rank: rank)
    }

    private func idleInsideSpan(_ timeline: Timeline, rank: Int) -> Double {
        let events = timeline.events.filter { $0.rank == rank }
        let span = (events.map(\.end).max() ?? 0) - (events.map(\.start).min() ?? 0)
        return span - timeline.busyTime(rank: rank)
    }

    /// GPipe and 1F1B: every rank idles (p-1)(F+B), ratio (p-1)/(m+p-1).
    func testGPipeAndOneFOneBBubbleRatio() throws {
        for ranks in [2, 3, 4, 8] {
            for microBatches in [ranks, 2 * ranks, 3 * ranks + 1] {
                for kind in [ScheduleKind.gpipe, .oneFOneB1, .oneFOneB2] {
                    let timeline = try Simulator.simulate(try Schedule.make(kind: kind, ranks: ranks, microBatches: microBatches), costs: costs)
                    let p = Double(ranks), m = Double(microBatches)
                    for rank in 0..<ranks {
                        XCTAssertEqual(timeline.bubbleRatio(rank: rank), (p - 1) / (m + p - 1), accuracy: tolerance,
                                       "\(kind) p=\(ranks) m=\(microBatches) rank \(rank)")
                        XCTAssertEqual(idle(timeline, rank: rank), (p - 1) * 3, accuracy: tolerance)
                    }
                }
            }
        }
    }

    /// The 2BP paper: with 2BP each of naive, GPipe, 1F1B-1 and 1F1B-2 is faster on more than one rank.
    func testTwoBPShortensTheStepOfEveryPaperSchedule() throws {
        for kind in [ScheduleKind.naive, .gpipe, .oneFOneB1, .oneFOneB2] {
            for ranks in [2, 4, 8] {
                let plain = try Simulator.simulate(try Schedule.make(kind: kind, ranks: ranks), costs: costs)
                let split = try Simulator.simulate(try Schedule.make(kind: kind, ranks: ranks, twoBP: true), costs: costs)
                XCTAssertLessThan(split.stepTime, plain.stepTime - tolerance, "\(kind) p=\(ranks)")
            }
        }
    }

    /// ZB-H1 (m >= p): every rank idles p-1 = (p-1)(F+I-W), a third of 1F1B's (p-1)(F+B).
    func testZeroBubbleH1IdlesAThirdOfOneFOneB() throws {
        for ranks in [2, 3, 4, 8] {
            for microBatches in [ranks, 2 * ranks, 3 * ranks + 1] {
                let h1 = try Simulator.simulate(try Schedule.make(kind: .zeroBubbleH1, ranks: ranks, microBatches: microBatches), costs: costs)
                let oneFOneB = try Simulator.simulate(try Schedule.make(kind: .oneFOneB1, ranks: ranks, microBatches: microBatches), costs: costs)
                for rank in 0..<ranks {
                    XCTAssertEqual(idle(h1, rank: rank), idle(oneFOneB, rank: rank) / 3, accuracy: tolerance,
                                   "p=\(ranks) m=\(microBatches) rank \(rank)")
                    XCTAssertEqual(idle(h1, rank: rank), Double(ranks - 1), accuracy: tolerance)
                }
            }
        }
    }

    /// ZB-H2 (m >= 2p) and ZB-V (m >= 2p, two chunks per rank): no idle time
    /// inside any rank's span; all idle is the start-up offset of p-1
    /// forwards, so the step is the work plus (p-1)F.
    func testZeroBubbleH2AndVHaveNoBubbleInsideARanksSpan() throws {
        for ranks in [2, 3, 4, 8] {
            for microBatches in [2 * ranks, 3 * ranks + 1, 4 * ranks] {
                for kind in [ScheduleKind.zeroBubbleH2, .zeroBubbleV] {
                    let schedule = try Schedule.make(kind: kind, ranks: ranks, microBatches: microBatches)
                    let timeline = try Simulator.simulate(schedule, costs: costs)
                    let work = Double(3 * microBatches * schedule.chunksPerRank)
                    XCTAssertEqual(timeline.stepTime, work + Double(ranks - 1), accuracy: tolerance, "\(kind) p=\(ranks) m=\(microBatches)")
                    for rank in 0..<ranks {
                        XCTAssertEqual(idleInsideSpan(timeline, rank: rank), 0, accuracy: tolerance, "\(kind) p=\(ranks) m=\(microBatches) rank \(rank)")
                    }
                }
            }
        }
    }

    /// Interleaved 1F1B with v chunks per rank (m a multiple of p): each rank
    /// idles (p-1)(F+B) of one chunk, 1/v of what 1F1B idles when each rank's
    /// stage costs as much as its v chunks together.
    func testInterleavedIdlesOneOverVOfOneFOneB() throws {
        for ranks in [2, 4] {
            for chunks in [2, 3] {
                for microBatches in [ranks, 2 * ranks, 4 * ranks] {
                    let interleaved = try Simulator.simulate(
                        try Schedule.make(kind: .interleaved, ranks: ranks, microBatches: microBatches, chunksPerRank: chunks), costs: costs)
                    let v = Double(chunks)
                    let wholeRank = CostModel.uniform(forward: v, backwardInput: v, backwardWeight: v)
                    let oneFOneB = try Simulator.simulate(try Schedule.make(kind: .oneFOneB1, ranks: ranks, microBatches: microBatches), costs: wholeRank)
                    for rank in 0..<ranks {
                        XCTAssertEqual(idle(interleaved, rank: rank), idle(oneFOneB, rank: rank) / v, accuracy: tolerance,
                                       "p=\(ranks) v=\(chunks) m=\(microBatches) rank \(rank)")
                    }
                }
            }
        }
    }

    /// Peak activation memory on the first stage: GPipe holds all m micro-batches, 1F1B at most p.
    func testPeakActivationsOfGPipeAndOneFOneB() throws {
        let activation = 1_000, parameters = 50
        let memory = CostModel.uniform(forward: 1, backwardInput: 1, backwardWeight: 1, activationBytes: activation, staticBytes: parameters)
        for ranks in [2, 4, 8] {
            for microBatches in [ranks, 2 * ranks, 3 * ranks + 1] {
                let gpipe = try Simulator.simulate(try Schedule.make(kind: .gpipe, ranks: ranks, microBatches: microBatches), costs: memory)
                let oneFOneB = try Simulator.simulate(try Schedule.make(kind: .oneFOneB1, ranks: ranks, microBatches: microBatches), costs: memory)
                XCTAssertEqual(gpipe.peakMemory?[0], parameters + microBatches * activation)
                XCTAssertEqual(oneFOneB.peakMemory?[0], parameters + min(ranks, microBatches) * activation)
                XCTAssertLessThanOrEqual(oneFOneB.peakMemory?.max() ?? .max, parameters + ranks * activation)
            }
        }
    }

    /// Lowering adds sends and receives but must not move any compute action.
    func testLoweredGeneratorsSimulateToTheSameComputeTimes() throws {
        let slowLink = CostModel.uniform(forward: 1, backwardInput: 1, backwardWeight: 1, latency: 0.25)
        for kind in ScheduleKind.allCases {
            let schedule = try Schedule.make(kind: kind, ranks: 4, twoBP: true)
            let plain = try Simulator.simulate(schedule, costs: slowLink)
            let lowered = try Simulator.simulate(schedule.lowered(), costs: slowLink)
            XCTAssertEqual(lowered.events.filter { !$0.action.kind.isCommunication }, plain.events, "\(kind)")
            XCTAssertEqual(lowered.stepTime, plain.stepTime, accuracy: tolerance)
        }
    }
}
