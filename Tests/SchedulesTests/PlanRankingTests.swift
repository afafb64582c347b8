import Foundation
import XCTest
@testable import Schedules

final class PlanRankingTests: XCTestCase {
    private let equal = CostModel.uniform(forward: 1, backwardInput: 1, backwardWeight: 1,
                                          activationBytes: 10, stashBytes: 6, staticBytes: 100)

    private func rank(limit: Int? = nil, microBatches: Int? = nil) throws -> PlanReport {
        try PlanRanking.rank(PlanRanking.Settings(ranks: 4, microBatches: microBatches, sequenceLength: 8, memoryLimit: limit)) { stages, scale in
            let perChunk = PlanInputs.perChunk(self.equal, chunksPerRank: stages / 4)
            return scale == 1 ? perChunk : perChunk.scaled(time: Double(scale), memory: Double(scale))
        }
    }

    func testRankingIsSortedByThroughputAndCoversEveryCandidate() throws {
        let report = try rank()
        let rates = report.entries.map(\.samplesPerSecond)
        XCTAssertEqual(rates, rates.sorted(by: >))
        let names = Set(report.entries.map(\.schedule))
        for kind in ScheduleKind.allCases {
            XCTAssertTrue(names.contains(kind.rawValue), "\(kind) missing; skipped: \(report.skipped)")
            XCTAssertTrue(names.contains(kind.rawValue + "+2bp"), "\(kind)+2bp missing")
        }
        XCTAssertTrue(names.contains("auto"))
        XCTAssertTrue(report.entries.allSatisfy { !$0.overLimit })
        XCTAssertTrue(report.table.contains("1f1b-1+2bp"))
    }

    /// Equal costs: 1F1B-1 takes (M + N - 1)(F + B) = 21, with 2BP 16 (docs/schedules.md).
    func testTwoBPSpeedupMatchesTheClosedForm() throws {
        let report = try rank()
        let plain = try XCTUnwrap(report.entries.first { $0.schedule == "1f1b-1" })
        let split = try XCTUnwrap(report.entries.first { $0.schedule == "1f1b-1+2bp" })
        XCTAssertEqual(plain.stepTime, 21, accuracy: 1e-9)
        XCTAssertEqual(split.stepTime, 16, accuracy: 1e-9)
        XCTAssertNil(plain.speedupOverPlain)
        XCTAssertEqual(try XCTUnwrap(split.speedupOverPlain), 21.0 / 16.0, accuracy: 1e-9)
        // Naive runs GPipe's 4 micro-batches as one: 2 × 4 × 4 + 4 × 4 = 48 for 4 samples.
        let naive = try XCTUnwrap(report.entries.first { $0.schedule == "naive" })
        XCTAssertEqual(naive.samplesPerStep, 4)
        XCTAssertEqual(naive.stepTime, 48, accuracy: 1e-9)
    }

    func testTinyLimitMarksEveryEntryOverIt() throws {
        let report = try rank(limit: 50)
        XCTAssertFalse(report.entries.isEmpty)
        XCTAssertTrue(report.entries.allSatisfy(\.overLimit))
        XCTAssertTrue(report.table.contains("OVER LIMIT"))
        XCTAssertTrue(report.skipped.contains { $0.schedule == "auto" }, "auto cannot fit a limit below the static bytes")
        let rates = report.entries.map(\.samplesPerSecond)
        XCTAssertEqual(rates, rates.sorted(by: >))
    }

    func testLimitBetweenSchedulesMarksOnlyTheDeepOnes() throws {
        // 1F1B-1 plain on rank 0 holds 4 micro-batches of activations: 100 + 40; GPipe-2 with 8: 100 + 80.
        let report = try rank(limit: 145)
        let byName = Dictionary(uniqueKeysWithValues: report.entries.map { ($0.schedule, $0) })
        XCTAssertEqual(byName["1f1b-1"]?.overLimit, false)
        XCTAssertEqual(byName["gpipe"]?.overLimit, false)
        XCTAssertEqual(byName["zb-h2"]?.overLimit, true)
        XCTAssertEqual(byName["auto"]?.overLimit, false)
    }

    func testInterleavedSkipsWithAReasonWhenMicroBatchesDoNotDivide() throws {
        let report = try rank(microBatches: 6)
        let skip = try XCTUnwrap(report.skipped.first { $0.schedule == "interleaved" })
        XCTAssertTrue(skip.reason.contains("multiple of the ranks"), skip.reason)
    }

    func testInputErrorsAreClear() throws {
        XCTAssertThrowsError(try PlanInputs.Choice(name: "nope")) { error in
            XCTAssertTrue("\(error)".contains("unknown schedule 'nope'"), "\(error)")
            XCTAssertTrue("\(error)".contains("auto"), "\(error)")
        }
        XCTAssertEqual(try PlanInputs.Choice(name: "AUTO"), .auto)
        XCTAssertEqual(try PlanInputs.Choice(name: "1F1B-1"), .kind(.oneFOneB1))
        XCTAssertThrowsError(try PlanInputs.checkStages(0)) { error in
            XCTAssertEqual("\(error)", "--stages must be at least 1, got 0")
        }
        XCTAssertThrowsError(try PlanInputs.costModel("F=1,I=one")) { error in
            XCTAssertTrue("\(error)".contains("--costs 'F=1,I=one'"), "\(error)")
            XCTAssertTrue("\(error)".contains("must be a number"), "\(error)")
        }
        XCTAssertThrowsError(try PlanInputs.costModel("/nonexistent/costs.json")) { error in
            XCTAssertTrue("\(error)".contains("cannot read"), "\(error)")
        }
        XCTAssertThrowsError(try PlanInputs.bytes("lots"))
        XCTAssertEqual(try PlanInputs.bytes("80GiB"), 80 << 30)
        XCTAssertEqual(try PlanInputs.bytes("16GB"), 16_000_000_000)
        XCTAssertEqual(try PlanInputs.bytes("1e3"), 1000)
        XCTAssertEqual(try PlanInputs.costModel(nil), .uniform(forward: 1, backwardInput: 1, backwardWeight: 1))
    }

    func testCostsFileIsRead() throws {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("plan-costs-\(UUID().uuidString).json")
        defer { try? FileManager.default.removeItem(at: url) }
        try equal.jsonData().write(to: url)
        XCTAssertEqual(try PlanInputs.costModel(url.path), equal)
        try Data("{\"stages\": [{\"forward\": 1}]}".utf8).write(to: url)
        XCTAssertThrowsError(try PlanInputs.costModel(url.path)) { error in
            XCTAssertTrue("\(error)".contains("backwardInput"), "\(error)")
        }
    }

    func testScalingMultipliesTimesAndActivationsButNotStaticBytes() {
        let scaled = equal.scaled(time: 3, memory: 2)
        XCTAssertEqual(scaled.stages[0].forward, 3)
        XCTAssertEqual(scaled.stages[0].activationBytes, 20)
        XCTAssertEqual(scaled.stages[0].stashBytes, 12)
        XCTAssertEqual(scaled.stages[0].staticBytes, 100)
    }
}
