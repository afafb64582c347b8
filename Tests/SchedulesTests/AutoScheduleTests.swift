import XCTest
@testable import Schedules

final class AutoScheduleTests: XCTestCase {
    private let costVariants: [(String, CostModel)] = [
        ("F=I=W=1", HandBuilt.equalCosts),
        ("I twice F", .uniform(forward: 1, backwardInput: 2, backwardWeight: 1)),
        ("W twice F", .uniform(forward: 1, backwardInput: 1, backwardWeight: 2)),
        ("slow link", .uniform(forward: 1, backwardInput: 1, backwardWeight: 1, latency: 0.3)),
        ("fast W*", .uniform(forward: 1, backwardInput: 1, backwardWeight: 1, concatenationEfficiency: 0.5)),
    ]

    /// Every micro-batch gets exactly one F, one I and one p2 (a W, or a share of a W*) on every rank.
    private func assertComplete(_ schedule: Schedule, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(schedule.chunksPerRank, 1, file: file, line: line)
        for (rank, actions) in schedule.actions.enumerated() {
            XCTAssertTrue(actions.allSatisfy { [.forward, .backwardInput, .backwardWeight].contains($0.kind) }, "rank \(rank)", file: file, line: line)
            let all = Array(0..<schedule.microBatches)
            XCTAssertEqual(actions.filter { $0.kind == .forward }.compactMap(\.microBatch).sorted(), all, file: file, line: line)
            XCTAssertEqual(actions.filter { $0.kind == .backwardInput }.compactMap(\.microBatch).sorted(), all, file: file, line: line)
            let concatenated = actions.contains(Action(.backwardWeight, nil))
            let single = actions.filter { $0.kind == .backwardWeight }.compactMap(\.microBatch)
            XCTAssertEqual(Set(single).count, single.count, file: file, line: line)
            if !concatenated { XCTAssertEqual(single.sorted(), all, "rank \(rank)", file: file, line: line) }
        }
    }

    func testAutoIsCompleteAndAtLeastAsFastAsOneFOneBWithTwoBP() throws {
        for (ranks, microBatches) in [(2, 4), (4, 8), (4, 16), (8, 16)] {
            for (name, costs) in costVariants {
                let result = try AutoSchedule.build(ranks: ranks, microBatches: microBatches, costs: costs)
                assertComplete(result.schedule)
                for reference in [try Schedule.make(kind: .oneFOneB1, ranks: ranks, microBatches: microBatches, twoBP: true),
                                  HandBuilt.oneFOneB(ranks: ranks, microBatches: microBatches, twoBP: true)] {
                    let timeline = try Simulator.simulate(reference, costs: costs)
                    XCTAssertLessThanOrEqual(result.timeline.stepTime, timeline.stepTime + 1e-9, "\(name) p=\(ranks) m=\(microBatches) vs \(reference.name)")
                }
                XCTAssertEqual(try Simulator.simulate(result.schedule, costs: costs), result.timeline)
                XCTAssertGreaterThan(result.candidatesTried, 1)
            }
        }
    }

    /// With no memory limit, W fills every bubble but the ramp-up: at least
    /// as fast as the handcrafted ZB-H1 (and, with equal costs, Zero Bubble's
    /// bound m(F+I+W) + (p-1)(F+I-W), which ZB-H2 also reaches).
    func testAutoIsAtLeastAsFastAsZeroBubbleH1() throws {
        for (ranks, microBatches) in [(4, 8), (4, 16), (8, 24)] {
            for (name, costs) in costVariants {
                let result = try AutoSchedule.build(ranks: ranks, microBatches: microBatches, costs: costs)
                let h1 = try Simulator.simulate(try Schedule.make(kind: .zeroBubbleH1, ranks: ranks, microBatches: microBatches), costs: costs)
                XCTAssertLessThanOrEqual(result.timeline.stepTime, h1.stepTime + 1e-9, "\(name) p=\(ranks) m=\(microBatches)")
            }
            let equal = try AutoSchedule.build(ranks: ranks, microBatches: microBatches, costs: HandBuilt.equalCosts)
            XCTAssertLessThanOrEqual(equal.timeline.stepTime, Double(3 * microBatches + ranks - 1) + 1e-9, "p=\(ranks) m=\(microBatches)")
        }
    }

    /// Under the peak memory of plain 1F1B, auto must respect the limit and still not be slower than 1F1B.
    func testAutoRespectsMemoryLimitAndBeatsOneFOneBUnderItsMemory() throws {
        let costs = CostModel.uniform(forward: 1, backwardInput: 1, backwardWeight: 1,
                                      activationBytes: 100, stashBytes: 60, staticBytes: 1_000)
        for (ranks, microBatches) in [(4, 8), (4, 16)] {
            let oneFOneB = try Simulator.simulate(HandBuilt.oneFOneB(ranks: ranks, microBatches: microBatches), costs: costs)
            let limit = try XCTUnwrap(oneFOneB.peakMemory?.max())
            let result = try AutoSchedule.build(ranks: ranks, microBatches: microBatches, costs: costs, memoryLimit: limit)
            assertComplete(result.schedule)
            for peak in try XCTUnwrap(result.timeline.peakMemory) { XCTAssertLessThanOrEqual(peak, limit) }
            XCTAssertLessThanOrEqual(result.timeline.stepTime, oneFOneB.stepTime + 1e-9)
            let unlimited = try AutoSchedule.build(ranks: ranks, microBatches: microBatches, costs: costs)
            XCTAssertLessThanOrEqual(unlimited.timeline.stepTime, result.timeline.stepTime + 1e-9)
        }
    }

    func testTighterMemoryLimitsAreRespectedOrRefusedWithAMessage() throws {
        let costs = CostModel.uniform(forward: 1, backwardInput: 1, backwardWeight: 1,
                                      activationBytes: 100, stashBytes: 60, staticBytes: 1_000, memoryLimit: 1_150)
        let result = try AutoSchedule.build(ranks: 4, microBatches: 8, costs: costs)
        for peak in try XCTUnwrap(result.timeline.peakMemory) { XCTAssertLessThanOrEqual(peak, 1_150) }
        XCTAssertThrowsError(try AutoSchedule.build(ranks: 4, microBatches: 8, costs: costs, memoryLimit: 1_050)) { error in
            XCTAssertTrue(String(describing: error).contains("memory limit"), "\(error)")
        }
    }

    func testRejectsEmptyPipelines() {
        XCTAssertThrowsError(try AutoSchedule.build(ranks: 0, microBatches: 4, costs: HandBuilt.equalCosts))
        XCTAssertThrowsError(try AutoSchedule.build(ranks: 2, microBatches: 0, costs: HandBuilt.equalCosts))
    }
}
