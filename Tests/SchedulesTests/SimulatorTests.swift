import XCTest
@testable import Schedules

final class SimulatorTests: XCTestCase {
    private let tolerance = 1e-9

    /// GPipe and 1F1B with F = I = W = 1 (B = 2) and free links: every rank
    /// idles (p-1)(F+B), so its bubble ratio is (p-1)/(m+p-1).
    func testGPipeAndOneFOneBBubbleMatchesClosedForm() throws {
        for (ranks, microBatches) in [(2, 2), (4, 4), (4, 8), (8, 16)] {
            for schedule in [HandBuilt.gpipe(ranks: ranks, microBatches: microBatches),
                             HandBuilt.oneFOneB(ranks: ranks, microBatches: microBatches)] {
                let timeline = try Simulator.simulate(schedule, costs: HandBuilt.equalCosts)
                let p = Double(ranks), m = Double(microBatches)
                XCTAssertEqual(timeline.stepTime, (m + p - 1) * 3, accuracy: tolerance, schedule.name)
                for rank in 0..<ranks {
                    XCTAssertEqual(timeline.bubbleRatio(rank: rank), (p - 1) / (m + p - 1), accuracy: tolerance,
                                   "\(schedule.name) p=\(ranks) m=\(microBatches) rank \(rank)")
                }
            }
        }
    }

    /// 1F1B with 2BP: the paper's point is that it is never slower than 1F1B,
    /// and strictly faster when the cool-down bubble can take p2 work.
    func testTwoBPOneFOneBIsFasterThanOneFOneB() throws {
        let plain = try Simulator.simulate(HandBuilt.oneFOneB(ranks: 4, microBatches: 8), costs: HandBuilt.equalCosts)
        let split = try Simulator.simulate(HandBuilt.oneFOneB(ranks: 4, microBatches: 8, twoBP: true), costs: HandBuilt.equalCosts)
        XCTAssertLessThan(split.stepTime, plain.stepTime - 1)
    }

    func testStartTimesFollowDependenciesAndRankOrder() throws {
        let schedule = HandBuilt.parse(["F0 F1 I0 I1 W*", "F0 I0 F1 I1 W0 W1"], microBatches: 2)
        let timeline = try Simulator.simulate(schedule, costs: .uniform(forward: 1, backwardInput: 2, backwardWeight: 3))
        func span(_ rank: Int, _ text: String) -> [Double] {
            let event = timeline.events.first { $0.rank == rank && $0.action.description == text }!
            return [event.start, event.end]
        }
        XCTAssertEqual(span(0, "F0"), [0, 1])
        XCTAssertEqual(span(1, "F0"), [1, 2])
        XCTAssertEqual(span(1, "I0"), [2, 4])
        XCTAssertEqual(span(1, "F1"), [4, 5])  // F1 arrived at 2, but the rank was busy with I0
        XCTAssertEqual(span(0, "I0"), [4, 6])  // waits for rank 1's I0
        XCTAssertEqual(span(0, "I1"), [7, 9])  // rank 1's I1 ends at 7
        XCTAssertEqual(span(0, "W*"), [9, 15]) // two micro-batches of p2, concatenated at efficiency 1
        XCTAssertEqual(timeline.stepTime, 15, accuracy: tolerance)
    }

    func testCommunicationDelaysTheConsumerButNotTheSender() throws {
        let schedule = HandBuilt.parse(["F0 F1 B0 B1", "F0 B0 F1 B1"], microBatches: 2)
        let costs = CostModel.uniform(forward: 1, backwardInput: 1, backwardWeight: 1,
                                      latency: 0.25, bandwidth: 1000, messageBytes: 250)
        let timeline = try Simulator.simulate(schedule, costs: costs)
        let transfer = 0.5
        let first = timeline.events.first { $0.rank == 1 && $0.action == Action(.forward, 0) }!
        XCTAssertEqual(first.start, 1 + transfer, accuracy: tolerance)
        let senderSecond = timeline.events.first { $0.rank == 0 && $0.action == Action(.forward, 1) }!
        XCTAssertEqual(senderSecond.start, 1, accuracy: tolerance, "a send must not block its sender")
    }

    /// Lowered SEND/RECV actions show up as transfer intervals and leave compute untouched.
    func testLoweredScheduleHasTheSameComputeTimesAndTransferEvents() throws {
        let costs = CostModel.uniform(forward: 1, backwardInput: 1, backwardWeight: 1, latency: 0.5)
        let plain = HandBuilt.parse(["F0 I0 W0", "F0 I0 W0"], microBatches: 1)
        let lowered = HandBuilt.parse(["F0 SEND_F0 RECV_B0 I0 W0", "RECV_F0 F0 I0 SEND_B0 W0"], microBatches: 1)
        let plainTimeline = try Simulator.simulate(plain, costs: costs)
        let loweredTimeline = try Simulator.simulate(lowered, costs: costs)
        let compute = loweredTimeline.events.filter { !$0.action.kind.isCommunication }
        XCTAssertEqual(compute, plainTimeline.events)
        let send = loweredTimeline.events.first { $0.action.kind == .sendActivation }!
        let receive = loweredTimeline.events.first { $0.action.kind == .receiveActivation }!
        XCTAssertEqual([send.rank, receive.rank], [0, 1])
        XCTAssertEqual([send.start, send.end], [1, 1.5])
        XCTAssertEqual([receive.start, receive.end], [1, 1.5])
        XCTAssertEqual(loweredTimeline.busyTime(rank: 0), 3, accuracy: tolerance)
    }

    func testConcatenatedWeightGradientUsesEfficiencyOrTable() throws {
        let schedule = HandBuilt.parse(["F0 F1 F2 F3 I0 I1 I2 I3 W*"], microBatches: 4)
        var costs = CostModel.uniform(forward: 1, backwardInput: 1, backwardWeight: 2, concatenationEfficiency: 0.5)
        var timeline = try Simulator.simulate(schedule, costs: costs)
        XCTAssertEqual(timeline.events.last!.duration, 2 * (1 + 3 * 0.5), accuracy: tolerance)
        costs.stages[0].concatenatedBackwardWeight = [2, 3, 4, 4.5]
        timeline = try Simulator.simulate(schedule, costs: costs)
        XCTAssertEqual(timeline.events.last!.duration, 4.5, accuracy: tolerance)
    }

    /// `W*` takes only what had p1 and no p2 yet; a second `W*` with nothing pending does nothing.
    func testConcatenatedWeightGradientTakesOnlyPendingMicroBatches() throws {
        let schedule = HandBuilt.parse(["F0 F1 F2 I0 W0 I1 I2 W* W*"], microBatches: 3)
        let timeline = try Simulator.simulate(schedule, costs: HandBuilt.equalCosts)
        let concatenated = timeline.events.filter { $0.action == Action(.backwardWeight, nil) }
        XCTAssertEqual(concatenated.count, 1)
        XCTAssertEqual(concatenated[0].duration, 2, accuracy: tolerance)
    }

    /// Peak activation memory: GPipe holds all m micro-batches on the first
    /// stage, 1F1B at most p (here: min(p, m)).
    func testPeakActivationMemoryOfGPipeAndOneFOneB() throws {
        let activation = 100, parameters = 7
        let costs = CostModel.uniform(forward: 1, backwardInput: 1, backwardWeight: 1,
                                      activationBytes: activation, staticBytes: parameters)
        let (ranks, microBatches) = (4, 12)
        let gpipe = try Simulator.simulate(HandBuilt.gpipe(ranks: ranks, microBatches: microBatches), costs: costs)
        let oneFOneB = try Simulator.simulate(HandBuilt.oneFOneB(ranks: ranks, microBatches: microBatches), costs: costs)
        XCTAssertEqual(gpipe.peakMemory?[0], parameters + microBatches * activation)
        XCTAssertEqual(oneFOneB.peakMemory?[0], parameters + ranks * activation)
        for rank in 0..<ranks {
            XCTAssertEqual(oneFOneB.peakMemory?[rank], parameters + (ranks - rank) * activation, "rank \(rank)")
        }
    }

    /// 2BP trades memory for time: p1 swaps activations for the stash, p2 frees it.
    func testStashIsHeldFromBackwardInputUntilBackwardWeight() throws {
        let costs = CostModel.uniform(forward: 1, backwardInput: 1, backwardWeight: 1, activationBytes: 10, stashBytes: 4)
        let early = try Simulator.simulate(HandBuilt.parse(["F0 F1 I0 W0 I1 W1"], microBatches: 2), costs: costs)
        let late = try Simulator.simulate(HandBuilt.parse(["F0 F1 I0 I1 W*"], microBatches: 2), costs: costs)
        XCTAssertEqual(early.peakMemory, [20])
        XCTAssertEqual(late.peakMemory, [20])
        let stashHeavy = CostModel.uniform(forward: 1, backwardInput: 1, backwardWeight: 1, activationBytes: 10, stashBytes: 15)
        XCTAssertEqual(try Simulator.simulate(HandBuilt.parse(["F0 F1 I0 I1 W*"], microBatches: 2), costs: stashHeavy).peakMemory, [30])
        XCTAssertEqual(try Simulator.simulate(HandBuilt.parse(["F0 F1 I0 W0 I1 W1"], microBatches: 2), costs: stashHeavy).peakMemory, [25])
    }

    func testDeadlockNamesRanksAndTheActionsTheyWaitOn() throws {
        // Rank 0 wants I0 before sending F1; rank 1 wants F1 before I0.
        let schedule = HandBuilt.parse(["F0 I0 F1 I1", "F0 F1 I0 I1"], microBatches: 2)
        XCTAssertThrowsError(try Simulator.simulate(schedule, costs: HandBuilt.equalCosts)) { error in
            let message = String(describing: error)
            XCTAssertTrue(message.contains("deadlock"), message)
            XCTAssertTrue(message.contains("rank 0 waits at action 1 (I0)"), message)
            XCTAssertTrue(message.contains("rank 1 waits at action 1 (F1)"), message)
            XCTAssertTrue(message.contains("rank 1 is stuck at action 1 (F1)"), message)
            XCTAssertTrue(message.contains("rank 0 is stuck at action 1 (I0)"), message)
            let scheduleError = error as? ScheduleError
            XCTAssertEqual(scheduleError?.reason, .deadlock)
            XCTAssertEqual(scheduleError?.cells, [ScheduleCell(rank: 0, step: 1), ScheduleCell(rank: 1, step: 1)])
        }
    }

    func testMissingAndSelfBlockingWorkIsNamed() throws {
        let missing = HandBuilt.parse(["F0 I0", "I0"], microBatches: 1)
        XCTAssertThrowsError(try Simulator.simulate(missing, costs: HandBuilt.equalCosts)) { error in
            XCTAssertTrue(String(describing: error).contains("F of stage 1, micro-batch 0, which no action of rank 1"), "\(error)")
        }
        let selfBlocking = HandBuilt.parse(["F0 W0 I0"], microBatches: 1)
        XCTAssertThrowsError(try Simulator.simulate(selfBlocking, costs: HandBuilt.equalCosts)) { error in
            XCTAssertTrue(String(describing: error).contains("which this rank only runs later, at action 2 (I0)"), "\(error)")
        }
    }

    func testMalformedSchedulesAreRejectedWithMessages() throws {
        let cases: [(Schedule, String)] = [
            (HandBuilt.parse(["F0 F0 B0"], microBatches: 1), "repeats F of stage 0, micro-batch 0"),
            (HandBuilt.parse(["F0 B0 W0"], microBatches: 1), "has no pending p2"),
            (HandBuilt.parse(["F3"], microBatches: 1), "names micro-batch 3"),
            (HandBuilt.parse(["1F0"], microBatches: 1), "names chunk 1"),
            (HandBuilt.parse(["F0 SEND_F0 B0"], microBatches: 1), "has no neighbour"),
        ]
        for (schedule, expected) in cases {
            XCTAssertThrowsError(try Simulator.simulate(schedule, costs: HandBuilt.equalCosts)) { error in
                XCTAssertTrue(String(describing: error).contains(expected), "\(error)")
                XCTAssertEqual((error as? ScheduleError)?.cells.count, 1, "the faulty action is marked: \(error)")
            }
        }
        let twoStages = CostModel(stages: Array(repeating: HandBuilt.equalCosts.stages[0], count: 2))
        XCTAssertThrowsError(try Simulator.simulate(HandBuilt.parse(["F0 B0"], microBatches: 1), costs: twoStages))
    }

    /// Two chunks per rank in a V: stages 0 and 3 on rank 0, 1 and 2 on rank 1.
    /// Stage 1 to stage 2 stays on rank 1, so it costs no transfer.
    func testMultiChunkPlacementChargesTransfersOnlyBetweenRanks() throws {
        let schedule = Schedule(name: "v", ranks: 2, chunksPerRank: 2, microBatches: 1, placement: [[0, 3], [1, 2]],
                                actions: [[Action(.forward, 0), Action(.forward, 0, chunk: 1), Action(.backwardFull, 0, chunk: 1), Action(.backwardFull, 0)],
                                          [Action(.forward, 0), Action(.forward, 0, chunk: 1), Action(.backwardFull, 0, chunk: 1), Action(.backwardFull, 0)]])
        let costs = CostModel.uniform(forward: 1, backwardInput: 1, backwardWeight: 1, latency: 1)
        let timeline = try Simulator.simulate(schedule, costs: costs)
        let starts = timeline.events.map { "\($0.rank):\($0.action)@\($0.start)" }
        XCTAssertEqual(starts, ["0:F0@0.0", "0:1F0@5.0", "0:1B0@6.0", "0:B0@14.0",
                                "1:F0@2.0", "1:1F0@3.0", "1:1B0@9.0", "1:B0@11.0"])
    }
}
