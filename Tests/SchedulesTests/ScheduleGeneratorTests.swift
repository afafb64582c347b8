import XCTest
@testable import Schedules

final class ScheduleGeneratorTests: XCTestCase {
    /// Every kind, plain and 2BP, on ranks 1...4 and 8 with every micro-batch
    /// count the kind accepts, passes the validator (lowered deadlock check
    /// included) and has the counts a training step needs.
    func testEveryGeneratorValidatesOnTheGrid() throws {
        var checked = 0
        for kind in ScheduleKind.allCases {
            for ranks in scheduleRankCounts {
                let counts = kind == .naive ? [1] : scheduleMicroBatchCounts(ranks: ranks).filter {
                    kind != .interleaved || $0 % ranks == 0
                }
                for microBatches in counts {
                    for twoBP in [false, true] {
                        let schedule = try Schedule.make(kind: kind, ranks: ranks, microBatches: microBatches, twoBP: twoBP)
                        XCTAssertNoThrow(try schedule.validate(), "\(kind) ranks \(ranks) M \(microBatches) 2bp \(twoBP)")
                        XCTAssertNoThrow(try schedule.lowered().validate())
                        assertCounts(schedule, kind: kind, twoBP: twoBP)
                        checked += 1
                    }
                }
            }
        }
        XCTAssertGreaterThan(checked, 300)
    }

    func testInterleavedWithMoreChunksValidates() throws {
        for ranks in scheduleRankCounts {
            for chunks in 1...4 {
                for microBatches in [ranks, 2 * ranks, 3 * ranks] {
                    for twoBP in [false, true] {
                        let schedule = try Schedule.make(kind: .interleaved, ranks: ranks, microBatches: microBatches,
                                                         twoBP: twoBP, chunksPerRank: chunks)
                        XCTAssertNoThrow(try schedule.validate(), "interleaved ranks \(ranks) v \(chunks) M \(microBatches) 2bp \(twoBP)")
                        assertCounts(schedule, kind: .interleaved, twoBP: twoBP)
                    }
                }
            }
        }
    }

    /// Per rank and chunk: one F per micro-batch; one B each (plain) or one I
    /// each (2BP and Zero Bubble); W only when split.
    func assertCounts(_ schedule: Schedule, kind: ScheduleKind, twoBP: Bool,
                      file: StaticString = #filePath, line: UInt = #line) {
        let split = twoBP || kind.splitsBackwardInherently
        for (rank, actions) in schedule.actions.enumerated() {
            for chunk in 0..<schedule.chunksPerRank {
                let mine = actions.filter { $0.chunk == chunk }
                func count(_ kind: ActionKind) -> Int { mine.filter { $0.kind == kind }.count }
                XCTAssertEqual(count(.forward), schedule.microBatches, "F on rank \(rank) chunk \(chunk)", file: file, line: line)
                XCTAssertEqual(count(.backwardFull), split ? 0 : schedule.microBatches, file: file, line: line)
                XCTAssertEqual(count(.backwardInput), split ? schedule.microBatches : 0, file: file, line: line)
                if !split { XCTAssertEqual(count(.backwardWeight), 0, file: file, line: line) }
                let concatenated = mine.filter { $0.kind == .backwardWeight && $0.microBatch == nil }.count
                XCTAssertLessThanOrEqual(concatenated, 1, "at most one W* per chunk", file: file, line: line)
                if !twoBP { XCTAssertEqual(concatenated, 0, "W* only with 2BP", file: file, line: line) }
            }
        }
    }

    // MARK: Golden schedules

    func testOneFOneBOnTwoRanks() throws {
        let plain = try Schedule.make(kind: .oneFOneB1, ranks: 2)
        XCTAssertEqual(plain.name, "1f1b-1")
        XCTAssertEqual(plain.microBatches, 2)
        XCTAssertEqual(scheduleRows(plain), [
            "F0 F1 B0 B1",
            "F0 B0 F1 B1",
        ])
        let split = try Schedule.make(kind: .oneFOneB1, ranks: 2, twoBP: true)
        XCTAssertEqual(split.name, "1f1b-1+2bp")
        XCTAssertEqual(scheduleRows(split), [
            "F0 F1 I0 I1 W0 W*",
            "F0 I0 F1 I1 W*",
        ])
    }

    /// The 2BP paper's 1F1B-1 on 4 GPUs: cool-down I W pairs (oldest W
    /// first), then the rest as one W*.
    func testOneFOneBWithTwoBPOnFourRanks() throws {
        let schedule = try Schedule.make(kind: .oneFOneB1, ranks: 4, microBatches: 4, twoBP: true)
        XCTAssertEqual(scheduleRows(schedule), [
            "F0 F1 F2 F3 I0 I1 W0 I2 W1 I3 W2 W*",
            "F0 F1 F2 I0 F3 I1 I2 W0 I3 W1 W*",
            "F0 F1 I0 F2 I1 F3 I2 I3 W0 W*",
            "F0 I0 F1 I1 F2 I2 F3 I3 W*",
        ])
        for (rank, actions) in schedule.actions.enumerated() {
            let singleW = actions.filter { $0.kind == .backwardWeight && $0.microBatch != nil }.count
            XCTAssertEqual(singleW, 3 - rank, "one W per cool-down I on rank \(rank)")
            XCTAssertEqual(actions.last, Action(.backwardWeight, nil), "the step ends with W*")
        }
        XCTAssertEqual(schedule.actions.map(\.count), [12, 11, 10, 9])
    }

    func testOneFOneB2DefaultsToTwiceTheRanks() throws {
        let schedule = try Schedule.make(kind: .oneFOneB2, ranks: 2)
        XCTAssertEqual(schedule.microBatches, 4)
        XCTAssertEqual(scheduleRows(schedule), [
            "F0 F1 B0 F2 B1 F3 B2 B3",
            "F0 B0 F1 B1 F2 B2 F3 B3",
        ])
        XCTAssertEqual(scheduleRows(try Schedule.make(kind: .oneFOneB2, ranks: 2, twoBP: true)), [
            "F0 F1 I0 F2 I1 F3 I2 I3 W0 W*",
            "F0 I0 F1 I1 F2 I2 F3 I3 W*",
        ])
    }

    func testGPipeAndNaive() throws {
        XCTAssertEqual(scheduleRows(try Schedule.make(kind: .gpipe, ranks: 2)), [
            "F0 F1 B0 B1",
            "F0 F1 B0 B1",
        ])
        XCTAssertEqual(scheduleRows(try Schedule.make(kind: .gpipe, ranks: 2, microBatches: 3, twoBP: true)), [
            "F0 F1 F2 I0 I1 I2 W*",
            "F0 F1 F2 I0 I1 I2 W*",
        ])
        let naive = try Schedule.make(kind: .naive, ranks: 3)
        XCTAssertEqual(naive.microBatches, 1)
        XCTAssertEqual(scheduleRows(naive), ["F0 B0", "F0 B0", "F0 B0"])
        XCTAssertEqual(scheduleRows(try Schedule.make(kind: .naive, ranks: 2, twoBP: true)), ["F0 I0 W*", "F0 I0 W*"])
    }

    func testInterleavedOnTwoRanks() throws {
        let schedule = try Schedule.make(kind: .interleaved, ranks: 2, microBatches: 2)
        XCTAssertEqual(schedule.chunksPerRank, 2)
        XCTAssertEqual(schedule.placement, [[0, 2], [1, 3]])
        XCTAssertEqual(scheduleRows(schedule), [
            "F0 F1 1F0 1F1 1B0 1B1 B0 B1",
            "F0 F1 1F0 1B0 1F1 1B1 B0 B1",
        ])
        XCTAssertEqual(scheduleRows(try Schedule.make(kind: .interleaved, ranks: 2, microBatches: 2, twoBP: true)), [
            "F0 F1 1F0 1F1 1I0 1W0 1I1 1W1 I0 W0 I1 W1",
            "F0 F1 1F0 1I0 1F1 1I1 I0 1W0 I1 1W1 W*",
        ])
    }

    func testInterleavedDefaults() throws {
        let schedule = try Schedule.make(kind: .interleaved, ranks: 4)
        XCTAssertEqual(schedule.chunksPerRank, 2)
        XCTAssertEqual(schedule.microBatches, 8)
        XCTAssertEqual(schedule.virtualStages, 8)
        // Rank 0 warms up with (v - 1) * N + 2 * (N - 1) = 10 forwards, the
        // last rank with (v - 1) * N = 4; each then starts its steady state with
        // one more forward before the first backward.
        XCTAssertEqual(schedule.actions[0].prefix(while: { $0.kind == .forward }).count, 10 + 1)
        XCTAssertEqual(schedule.actions[3].prefix(while: { $0.kind == .forward }).count, 4 + 1)
    }

    func testZeroBubbleH1OnFourRanks() throws {
        let schedule = try Schedule.make(kind: .zeroBubbleH1, ranks: 4, microBatches: 8)
        XCTAssertEqual(scheduleRows(schedule), [
            "F0 F1 F2 F3 I0 W0 F4 I1 W1 F5 I2 W2 F6 I3 W3 F7 I4 W4 I5 W5 I6 W6 I7 W7",
            "F0 F1 F2 I0 F3 I1 W0 F4 I2 W1 F5 I3 W2 F6 I4 W3 F7 I5 W4 I6 W5 I7 W6 W7",
            "F0 F1 I0 F2 I1 F3 I2 W0 F4 I3 W1 F5 I4 W2 F6 I5 W3 F7 I6 W4 I7 W5 W6 W7",
            "F0 I0 F1 I1 F2 I2 F3 I3 W0 F4 I4 W1 F5 I5 W2 F6 I6 W3 F7 I7 W4 W5 W6 W7",
        ])
        // --2bp concatenates the closing W run into one W*.
        XCTAssertEqual(scheduleRows(try Schedule.make(kind: .zeroBubbleH1, ranks: 4, microBatches: 8, twoBP: true)), [
            "F0 F1 F2 F3 I0 W0 F4 I1 W1 F5 I2 W2 F6 I3 W3 F7 I4 W4 I5 W5 I6 W6 I7 W*",
            "F0 F1 F2 I0 F3 I1 W0 F4 I2 W1 F5 I3 W2 F6 I4 W3 F7 I5 W4 I6 W5 I7 W*",
            "F0 F1 I0 F2 I1 F3 I2 W0 F4 I3 W1 F5 I4 W2 F6 I5 W3 F7 I6 W4 I7 W*",
            "F0 I0 F1 I1 F2 I2 F3 I3 W0 F4 I4 W1 F5 I5 W2 F6 I6 W3 F7 I7 W*",
        ])
    }

    func testZeroBubbleH2OnFourRanks() throws {
        let schedule = try Schedule.make(kind: .zeroBubbleH2, ranks: 4, microBatches: 8)
        XCTAssertEqual(scheduleRows(schedule), [
            "F0 F1 F2 F3 F4 F5 F6 I0 W0 I1 F7 I2 W1 I3 W2 I4 W3 I5 W4 I6 W5 W6 I7 W7",
            "F0 F1 F2 F3 F4 I0 F5 I1 F6 I2 W0 I3 F7 I4 W1 I5 W2 I6 W3 W4 I7 W5 W6 W7",
            "F0 F1 F2 I0 F3 I1 F4 I2 F5 I3 F6 I4 W0 I5 F7 I6 W1 W2 I7 W3 W4 W5 W6 W7",
            "F0 I0 F1 I1 F2 I2 F3 I3 F4 I4 F5 I5 F6 I6 W0 F7 I7 W1 W2 W3 W4 W5 W6 W7",
        ])
        // Rank 0 warms up with 2N - 1 forwards: ZB-H2's extra memory.
        XCTAssertEqual(schedule.actions[0].prefix(while: { $0.kind == .forward }).count, 7)
    }

    func testZeroBubbleVOnTwoRanks() throws {
        let schedule = try Schedule.make(kind: .zeroBubbleV, ranks: 2, microBatches: 4)
        XCTAssertEqual(schedule.placement, [[0, 3], [1, 2]])
        XCTAssertEqual(scheduleRows(schedule), [
            "F0 F1 F2 1F0 1I0 1W0 1F1 1I1 1W1 F3 I0 W0 1F2 1I2 1W2 I1 W1 1F3 1I3 1W3 I2 W2 I3 W3",
            "F0 1F0 F1 1F1 1I0 1W0 F2 I0 W0 1F2 1I1 1W1 F3 I1 W1 1F3 1I2 1W2 I2 1I3 I3 W2 1W3 W3",
        ])
        // The turn (stage 1 -> 2) is on rank 1 and the loss (stage 3) on rank 0:
        // lowering adds no message between rank 1's chunks.
        let lowered = schedule.lowered()
        XCTAssertFalse(lowered.actions[1].contains(Action(.sendActivation, 0, chunk: 0)))
        XCTAssertTrue(lowered.actions[1].contains(Action(.sendActivation, 0, chunk: 1)))
        XCTAssertFalse(lowered.actions[0].contains(Action(.sendActivation, 0, chunk: 1)), "stage 3 is the last")
        XCTAssertEqual(scheduleRows(try Schedule.make(kind: .zeroBubbleV, ranks: 2, microBatches: 4, twoBP: true)), [
            "F0 F1 F2 1F0 1I0 1W0 1F1 1I1 1W1 F3 I0 W0 1F2 1I2 1W2 I1 W1 1F3 1I3 1W3 I2 W2 I3 W*",
            "F0 1F0 F1 1F1 1I0 1W0 F2 I0 W0 1F2 1I1 1W1 F3 I1 W1 1F3 1I2 1W2 I2 1I3 I3 W* 1W*",
        ])
    }

    // MARK: Requests

    func testDefaults() throws {
        XCTAssertEqual(try Schedule.make(kind: .gpipe, ranks: 3).microBatches, 3)
        XCTAssertEqual(try Schedule.make(kind: .oneFOneB1, ranks: 3).microBatches, 3)
        XCTAssertEqual(try Schedule.make(kind: .oneFOneB2, ranks: 3).microBatches, 6)
        XCTAssertEqual(try Schedule.make(kind: .zeroBubbleH1, ranks: 3).microBatches, 6)
        XCTAssertEqual(try Schedule.make(kind: .zeroBubbleH2, ranks: 3).microBatches, 6)
        let v = try Schedule.make(kind: .zeroBubbleV, ranks: 3)
        XCTAssertEqual(v.microBatches, 6)
        XCTAssertEqual(v.placement, [[0, 5], [1, 4], [2, 3]])
        XCTAssertEqual(try ScheduleKind(name: "ZB-V"), .zeroBubbleV)
        XCTAssertEqual(ScheduleKind.allCases.map(\.rawValue),
                       ["naive", "gpipe", "1f1b-1", "1f1b-2", "interleaved", "zb-h1", "zb-h2", "zb-v"])
    }

    func testBadRequestsAreErrorsWithMessages() {
        func message(_ make: () throws -> Schedule) -> String? {
            do {
                _ = try make()
                return nil
            } catch let error as ScheduleError {
                XCTAssertEqual(error.reason, .invalidRequest)
                return error.description
            } catch {
                XCTFail("unexpected \(error)")
                return nil
            }
        }
        XCTAssertEqual(message { try Schedule.make(kind: .gpipe, ranks: 0) }, "gpipe needs at least 1 rank, got 0")
        XCTAssertEqual(message { try Schedule.make(kind: .oneFOneB1, ranks: -2) }, "1f1b-1 needs at least 1 rank, got -2")
        XCTAssertEqual(message { try Schedule.make(kind: .oneFOneB1, ranks: 2, microBatches: 0) }, "1f1b-1 needs at least 1 micro-batch, got 0")
        XCTAssertNotNil(message { try Schedule.make(kind: .naive, ranks: 2, microBatches: 4) }?.range(of: "one micro-batch"))
        XCTAssertNotNil(message { try Schedule.make(kind: .interleaved, ranks: 4, microBatches: 6) }?.range(of: "multiple of the ranks"))
        XCTAssertNotNil(message { try Schedule.make(kind: .interleaved, ranks: 4, microBatches: 2) }?.range(of: "multiple of the ranks"))
        XCTAssertNotNil(message { try Schedule.make(kind: .interleaved, ranks: 2, chunksPerRank: 0) }?.range(of: "at least 1 chunk"))
        XCTAssertNotNil(message { try Schedule.make(kind: .oneFOneB1, ranks: 2, chunksPerRank: 2) }?.range(of: "one chunk per rank"))
        XCTAssertNotNil(message { try Schedule.make(kind: .zeroBubbleV, ranks: 2, chunksPerRank: 3) }?.range(of: "exactly 2 chunks"))
        XCTAssertThrowsError(try ScheduleKind(name: "2f2b")) { error in
            XCTAssertTrue("\(error)".contains("1f1b-1"), "lists the valid names")
        }
    }
}
