import Foundation
import Models
import Schedules
import Tensor
import XCTest
@testable import Training
@testable import Benchmarks

final class ProfileTests: XCTestCase {
    private let tiny = LlamaConfig.named.first { $0.name == "llama-tiny" }!.config

    func testProfileWritesACostModelWithPositiveTimesForEveryStage() throws {
        let request = ScheduleRequest(kind: .oneFOneB1, ranks: 2)
        let result = try Profiler.run(Profiler.Settings(model: tiny, modelName: "llama-tiny", request: request,
                                                        batchSize: 4, sampleLength: 8, repeats: 1))
        let costs = try CostModel(json: result.jsonData())
        XCTAssertEqual(costs.stages.count, 2)
        XCTAssertEqual(result.microBatches, 2)
        XCTAssertEqual(result.microBatchSize, 2)
        for (index, stage) in costs.stages.enumerated() {
            XCTAssertGreaterThan(stage.forward, 0, "stage \(index)")
            XCTAssertGreaterThan(stage.backwardInput, 0, "stage \(index)")
            XCTAssertGreaterThan(stage.backwardWeight, 0, "stage \(index)")
            XCTAssertEqual(stage.concatenatedBackwardWeight?.count, 2)
            XCTAssertTrue(stage.concatenatedBackwardWeight!.allSatisfy { $0 > 0 })
            XCTAssertGreaterThan(stage.activationBytes, 0, "stage \(index)")
            XCTAssertGreaterThan(stage.stashBytes, 0, "stage \(index)")
            XCTAssertEqual(stage.staticBytes, 16 * result.stages[index].parameters)
            // Weights and gradients are allocated when the chunk is built (half the static bytes),
            // plus small tables such as RoPE's cos/sin.
            XCTAssertGreaterThanOrEqual(result.stages[index].builtBytes, stage.staticBytes / 2)
            XCTAssertLessThan(result.stages[index].builtBytes, stage.staticBytes / 2 + 64 << 10)
        }
        XCTAssertEqual(result.stages.reduce(0) { $0 + $1.parameters }, tiny.parameterCount)
        XCTAssertEqual(costs.messageBytes, 2 * 8 * tiny.hiddenSize * 4)
        // The file simulates.
        let schedule = try Schedule.make(kind: .oneFOneB1, ranks: 2, twoBP: true)
        XCTAssertGreaterThan(try Simulator.simulate(schedule, costs: costs).stepTime, 0)
    }

    func testDenseTableInterpolatesBetweenMeasuredCounts() {
        XCTAssertEqual(Profiler.denseTable([1: 1, 2: 1.5, 4: 2.5, 6: 3.5], upTo: 6), [1, 1.5, 2, 2.5, 3, 3.5])
        XCTAssertEqual(Profiler.denseTable([1: 2], upTo: 3), [2, 4, 6])
    }

    func testComparisonRunsTheSameScheduleMeasuredAndSimulated() throws {
        let request = ScheduleRequest(kind: .oneFOneB1, ranks: 2, twoBP: true)
        let costs = CostModel.uniform(forward: 1e-3, backwardInput: 1e-3, backwardWeight: 1e-3)
        let result = try ProfilerComparison.run(model: tiny, request: request, batchSize: 2, sampleLength: 8,
                                                costs: costs, steps: 1)
        XCTAssertEqual(result.schedule, "1f1b-1+2bp")
        XCTAssertGreaterThan(result.measuredStepTime, 0)
        let expected = try Simulator.simulate(Schedule.make(kind: .oneFOneB1, ranks: 2, twoBP: true), costs: costs).stepTime
        XCTAssertEqual(result.simulatedStepTime, expected, accuracy: 1e-12)
        XCTAssertEqual(result.measured.ranks, 2)
        XCTAssertEqual(result.measuredPeakMemory.count, 2)
        XCTAssertTrue(result.measured.events.contains { $0.action.kind == .backwardWeight })
    }

    func testAnalyticCostsCountEveryParameterOnceAndFollowTheFormulas() throws {
        let sevenB = try LlamaConfig.resolve("llama-7b")
        let settings = AnalyticCostSettings(flopsRate: 1e12, microBatchSize: 1, sampleLength: 1024)
        let costs = try AnalyticCosts.costModel(sevenB, settings: settings, virtualStages: 4)
        XCTAssertEqual(costs.stages.count, 4)
        XCTAssertEqual(costs.stages.reduce(0) { $0 + $1.staticBytes }, 16 * sevenB.parameterCount)
        // Per layer e·sb·(6h + 2kv + 3i) + e·a·s²·b activations and e·sb·(10h + 2kv + 3i) stash, e = 2, s = 1024, b = 1.
        let (h, i, a, s) = (4096, 11008, 32, 1024)
        let layer = sevenB.unitCosts(sampleLength: s)[1]
        XCTAssertEqual(2 * layer.activationElements, Double(2 * s * (6 * h + 2 * h + 3 * i) + 2 * a * s * s))
        XCTAssertEqual(2 * layer.stashElements, Double(2 * s * (10 * h + 2 * h + 3 * i)))
        let flops = sevenB.unitCosts(sampleLength: s).reduce(0.0) { $0 + $1.forward }
        XCTAssertEqual(costs.stages.reduce(0) { $0 + $1.forward }, flops / 1e12, accuracy: 1e-9)
        XCTAssertEqual(costs.messageBytes, 2 * s * h)
        // Twice the micro-batch: twice the time and activations, same static bytes.
        let doubled = try AnalyticCosts.costModel(sevenB, settings: settings, virtualStages: 4, scale: 2)
        XCTAssertEqual(doubled.stages[1].forward, 2 * costs.stages[1].forward, accuracy: 1e-12)
        XCTAssertEqual(doubled.stages[1].activationBytes, 2 * costs.stages[1].activationBytes)
        XCTAssertEqual(doubled.stages[1].staticBytes, costs.stages[1].staticBytes)
        assertTwoBPError("40 pipeline stages need at least 40 blocks") { try AnalyticCosts.costModel(sevenB, settings: settings, virtualStages: 40) }
    }
}
