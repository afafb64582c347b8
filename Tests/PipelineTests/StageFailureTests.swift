import Foundation
import Layers
import Models
import Pipeline
import Schedules
import Tensor
import Training
import XCTest

/// A chunk that behaves like the one it wraps until a chosen forward, where it throws.
final class FaultyChunk: ModelChunk {
    let wrapped: ModelChunk
    let failingMicroBatch: Int

    init(_ wrapped: ModelChunk, failingAt microBatch: Int) {
        self.wrapped = wrapped
        failingMicroBatch = microBatch
    }

    var parameters: [Parameter] { wrapped.parameters }
    var isFirst: Bool { wrapped.isFirst }
    var isLast: Bool { wrapped.isLast }

    func inputShape(for batch: any MicroBatch) throws -> [Int]? { try wrapped.inputShape(for: batch) }
    func outputShape(for batch: any MicroBatch) throws -> [Int]? { try wrapped.outputShape(for: batch) }

    func forward(_ input: Tensor?, batch: any MicroBatch, microBatch: Int) throws -> ChunkOutput {
        if microBatch == failingMicroBatch { throw TwoBPError("injected fault in forward of micro-batch \(microBatch)") }
        return try wrapped.forward(input, batch: batch, microBatch: microBatch)
    }

    func backwardInput(_ outputGradient: Tensor?, microBatch: Int) throws -> Tensor? {
        try wrapped.backwardInput(outputGradient, microBatch: microBatch)
    }

    func backwardWeight(_ work: WeightGradientWork) throws {
        try wrapped.backwardWeight(work)
    }

    func evaluate(_ input: Tensor?, batch: any MicroBatch) throws -> ChunkOutput {
        try wrapped.evaluate(input, batch: batch)
    }
}

final class StageFailureTests: XCTestCase {
    func testAnErrorInOneStageEndsEveryStagePromptlyNamingIt() throws {
        let model = PipelineEquivalenceTests.model
        for failingRank in 0..<4 {
            let plan = try PipelinePlan(request: ScheduleRequest(kind: .oneFOneB2, ranks: 4, twoBP: true),
                                        unitCosts: model.unitCosts(sampleLength: 4).map(\.forward))
            let batch = TokenBatch.random(vocabularySize: model.vocabSize, batchSize: 8, sequenceLength: 4, seed: 5)
            let started = Date()
            XCTAssertThrowsError(try RankThreads.run(transports: ThreadTransport.group(ranks: 4, receiveTimeout: 60)) { transport in
                let rank = transport.rank
                let chunks: [ModelChunk] = try plan.unitRanges(rank: rank).map { units in
                    let chunk = try LlamaChunk(config: model, units: units, seed: 1)
                    return rank == failingRank ? FaultyChunk(chunk, failingAt: 3) : chunk as ModelChunk
                }
                let runner = StageRunner(rank: rank, schedule: plan.schedule, chunks: chunks, transport: transport,
                                         meter: MemoryMeter(name: "rank \(rank)"))
                return try runner.runStep(microBatches: batch.split(into: 8), clockOrigin: DispatchTime.now().uptimeNanoseconds).loss
            }) { error in
                XCTAssertEqual("\(error)", "stage \(failingRank) failed: injected fault in forward of micro-batch 3")
            }
            XCTAssertLessThan(Date().timeIntervalSince(started), 10, "the other stages must not wait for their receive timeout")
        }
    }
}
