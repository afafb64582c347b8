import XCTest
@testable import Schedules

/// Shape checks in unit time (T_F = T_I = T_W = 1, T_B = 2, see `unitTiming`):
/// the claims the papers make about each schedule, measured on our generators.
final class ScheduleGeneratorTimingTests: XCTestCase {
    /// The 2BP paper's claim: splitting the backward never slows a schedule
    /// down and speeds it up whenever there is more than one rank.
    func testTwoBPIsFasterThanPlain() throws {
        for kind in [ScheduleKind.naive, .gpipe, .oneFOneB1, .oneFOneB2, .interleaved] {
            for ranks in scheduleRankCounts {
                let counts = kind == .naive ? [1] : scheduleMicroBatchCounts(ranks: ranks).filter { kind != .interleaved || $0 % ranks == 0 }
                for microBatches in counts {
                    let plain = scheduleUnitTiming(try Schedule.make(kind: kind, ranks: ranks, microBatches: microBatches))
                    let split = scheduleUnitTiming(try Schedule.make(kind: kind, ranks: ranks, microBatches: microBatches, twoBP: true))
                    if ranks == 1 {
                        XCTAssertEqual(split.stepTime, plain.stepTime, "\(kind) on 1 rank, M \(microBatches)")
                    } else {
                        XCTAssertLessThan(split.stepTime, plain.stepTime, "\(kind) on \(ranks) ranks, M \(microBatches)")
                    }
                }
            }
        }
    }

    /// 1F1B-1 on 4 ranks: 21 units plain, 16 with 2BP (the cool-down W fill and W*).
    func testOneFOneBStepTimes() throws {
        XCTAssertEqual(scheduleUnitTiming(try Schedule.make(kind: .oneFOneB1, ranks: 4)).stepTime, 21)
        XCTAssertEqual(scheduleUnitTiming(try Schedule.make(kind: .oneFOneB1, ranks: 4, twoBP: true)).stepTime, 16)
    }

    /// Zero Bubble, section 2.1: ZB-H1's bubble is a third of 1F1B's.
    func testZeroBubbleH1HasAThirdOfTheOneFOneBBubble() throws {
        for ranks in scheduleRankCounts where ranks > 1 {
            for microBatches in [ranks, 2 * ranks, 3 * ranks + 1] {
                let oneFOneB = scheduleUnitTiming(try Schedule.make(kind: .oneFOneB1, ranks: ranks, microBatches: microBatches))
                let h1 = scheduleUnitTiming(try Schedule.make(kind: .zeroBubbleH1, ranks: ranks, microBatches: microBatches))
                let oneFOneBBubble = (0..<ranks).map { oneFOneB.idleInsideSpan(rank: $0) }.max()!
                let h1Bubble = (0..<ranks).map { h1.idleInsideSpan(rank: $0) }.max()!
                XCTAssertEqual(oneFOneBBubble, 3 * (ranks - 1))
                XCTAssertEqual(h1Bubble, ranks - 1, "ranks \(ranks), M \(microBatches)")
                XCTAssertLessThan(h1.stepTime, oneFOneB.stepTime)
            }
        }
    }

    /// Zero Bubble, section 2.2: with enough micro-batches ZB-H2 has no idle
    /// slot between a rank's first and last action, and the step is the
    /// N - 1 slots of start-up longer than the 3M of work.
    func testZeroBubbleH2HasNoBubble() throws {
        for ranks in scheduleRankCounts {
            for microBatches in [2 * ranks - 1, 2 * ranks, 3 * ranks + 1, 5 * ranks] {
                let timing = scheduleUnitTiming(try Schedule.make(kind: .zeroBubbleH2, ranks: ranks, microBatches: microBatches))
                for rank in 0..<ranks {
                    XCTAssertEqual(timing.idleInsideSpan(rank: rank), 0, "ranks \(ranks), M \(microBatches), rank \(rank)")
                }
                XCTAssertEqual(timing.stepTime, 3 * microBatches + ranks - 1)
            }
        }
    }

    /// Zero Bubble's ZB-V: no bubble with M >= 2N, two chunks per rank.
    func testZeroBubbleVHasNoBubble() throws {
        for ranks in scheduleRankCounts {
            for microBatches in [2 * ranks, 3 * ranks + 1] {
                let timing = scheduleUnitTiming(try Schedule.make(kind: .zeroBubbleV, ranks: ranks, microBatches: microBatches))
                for rank in 0..<ranks {
                    XCTAssertEqual(timing.idleInsideSpan(rank: rank), 0, "ranks \(ranks), M \(microBatches), rank \(rank)")
                }
            }
        }
    }

    /// Micro-batches whose activations a rank holds at once (F done, p2 not
    /// yet), counted in action order: 1F1B and ZB-H1 hold at most N, ZB-H2 at
    /// most 2N - 1, ZB-V at most 2N half-size chunk activations (1F1B's
    /// memory); 2BP's deferred p2 costs more.
    func testPeakMicroBatchesInFlight() throws {
        func peak(_ schedule: Schedule) -> Int {
            schedule.actions.map { actions in
                var held = 0, peak = 0
                var pending = [Int](repeating: 0, count: schedule.chunksPerRank)
                for action in actions {
                    switch action.kind {
                    case .forward: held += 1
                    case .backwardFull: held -= 1
                    case .backwardInput: pending[action.chunk] += 1
                    case .backwardWeight:
                        let freed = action.microBatch == nil ? pending[action.chunk] : 1
                        pending[action.chunk] -= freed
                        held -= freed
                    case .sendActivation, .receiveActivation, .sendGradient, .receiveGradient: break
                    }
                    peak = max(peak, held)
                }
                return peak
            }.max() ?? 0
        }
        for ranks in scheduleRankCounts {
            let microBatches = 4 * ranks
            XCTAssertEqual(peak(try Schedule.make(kind: .oneFOneB1, ranks: ranks, microBatches: microBatches)), ranks)
            XCTAssertEqual(peak(try Schedule.make(kind: .zeroBubbleH1, ranks: ranks, microBatches: microBatches)), ranks)
            XCTAssertEqual(peak(try Schedule.make(kind: .zeroBubbleH2, ranks: ranks, microBatches: microBatches)), 2 * ranks - 1)
            XCTAssertLessThanOrEqual(peak(try Schedule.make(kind: .zeroBubbleV, ranks: ranks, microBatches: microBatches)), 2 * ranks)
            XCTAssertEqual(peak(try Schedule.make(kind: .gpipe, ranks: ranks, microBatches: microBatches)), microBatches)
            let twoBP = peak(try Schedule.make(kind: .oneFOneB1, ranks: ranks, microBatches: microBatches, twoBP: true))
            XCTAssertGreaterThanOrEqual(twoBP, ranks)
            XCTAssertLessThanOrEqual(twoBP, microBatches)
        }
    }
}
