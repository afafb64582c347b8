import Models
import Pipeline
import Schedules
import Tensor
import Training
import XCTest

/// A pipelined step must give the loss and gradients of the same step on one device.
final class PipelineEquivalenceTests: XCTestCase {
    /// Eight small layers, so every schedule (interleaved and zb-v on 4 ranks included) has a block per stage.
    static let model = LlamaConfig(
        hiddenSize: 16, intermediateSize: 24, numHiddenLayers: 8, numAttentionHeads: 2, numKeyValueHeads: 2,
        vocabSize: 64, maxPositionEmbeddings: 8)
    static let sequenceLength = 4

    func verify(_ request: ScheduleRequest, batchSize: Int? = nil, seed: UInt64 = 3) throws -> VerificationReport {
        let microBatches = try request.resolved().microBatches
        let batch = TokenBatch.random(vocabularySize: Self.model.vocabSize, batchSize: batchSize ?? microBatches,
                                                     sequenceLength: Self.sequenceLength, seed: seed)
        let report = try RankLauncher.run(.threads, ranks: request.ranks, receiveTimeout: 30) { transport in
            try PipelineVerification.run(model: Self.model, request: request, batch: batch, seed: seed, transport: transport)
        }
        return try XCTUnwrap(report)
    }

    func testEveryScheduleWithAndWithoutTwoBPMatchesOneDevice() throws {
        var checked = 0
        for kind in ScheduleKind.allCases {
            for ranks in 1...4 {
                for microBatches in microBatchCounts(kind, ranks: ranks) {
                    for twoBP in [false, true] {
                        let request = ScheduleRequest(kind: kind, ranks: ranks, microBatches: microBatches, twoBP: twoBP)
                        assertMatchesOneDevice(try verify(request), "\(request)")
                        checked += 1
                    }
                }
            }
        }
        XCTAssertGreaterThan(checked, 150)
    }

    /// The criterion `twobp verify` applies: gradients within 1e-5 relative, and the loss within
    /// 1e-6 of its magnitude. Micro-batches of other shapes run other GEMM blockings, whose float32
    /// rounding differs with the BLAS kernel (about 1e-9 relative in the loss here), so nothing
    /// tighter holds on every CPU.
    func assertMatchesOneDevice(_ report: VerificationReport, _ context: String, file: StaticString = #filePath, line: UInt = #line) {
        let kernel = "OpenBLAS kernel \(BLAS.coreName)"
        XCTAssertTrue(report.agrees(tolerance: 1e-5), "\(context), \(kernel): \(report)", file: file, line: line)
        XCTAssertLessThanOrEqual(report.maxRelativeGradientDifference, 1e-5, "\(context), \(kernel): \(report.worstParameter)",
                                 file: file, line: line)
        XCTAssertEqual(report.pipelineLoss, report.referenceLoss, accuracy: 1e-6 * abs(report.referenceLoss), "\(context), \(kernel)",
                       file: file, line: line)
    }

    /// Micro-batch counts each schedule allows on `ranks`, including counts that are not multiples of the ranks.
    func microBatchCounts(_ kind: ScheduleKind, ranks: Int) -> [Int] {
        switch kind {
        case .naive: [1]
        case .interleaved: [ranks, 2 * ranks]
        case .gpipe, .oneFOneB1, .oneFOneB2, .zeroBubbleH1, .zeroBubbleH2, .zeroBubbleV:
            Array(Set([1, ranks, ranks + 1, 2 * ranks + 1])).sorted()
        }
    }

    func testWholeBatchAsOneMicroBatchIsBitIdenticalOnAnyNumberOfStages() throws {
        for ranks in 1...4 {
            for twoBP in [false, true] {
                let report = try verify(ScheduleRequest(kind: .naive, ranks: ranks, twoBP: twoBP), batchSize: 3)
                XCTAssertEqual(report.maxRelativeGradientDifference, 0, "naive on \(ranks) stages sums in the same order")
                XCTAssertEqual(report.pipelineLoss, report.referenceLoss)
            }
        }
    }

    func testUnevenMicroBatchesStillMatch() throws {
        assertMatchesOneDevice(try verify(ScheduleRequest(kind: .oneFOneB1, ranks: 2, microBatches: 3, twoBP: true), batchSize: 7),
                               "1f1b-1 + 2BP, 3 uneven micro-batches of a batch of 7")
    }

    func testBadRequestsAreRefusedBeforeAnythingRuns() {
        let costs = Self.model.unitCosts(sampleLength: Self.sequenceLength).map(\.forward)
        let cases: [(ScheduleRequest, String)] = [
            (ScheduleRequest(kind: .gpipe, ranks: 9), "9 pipeline stages need at least 9 blocks; the model has 8"),
            (ScheduleRequest(kind: .interleaved, ranks: 4, chunksPerRank: 3), "interleaved needs 12 model stages (4 ranks × 3 chunks) but the model has only 8 blocks"),
            (ScheduleRequest(kind: .gpipe, ranks: 2, microBatches: 0), "gpipe needs at least 1 micro-batch, got 0"),
            (ScheduleRequest(kind: .interleaved, ranks: 4, microBatches: 2), "interleaved needs the micro-batches to be a multiple of the ranks (as Megatron does), got 2 micro-batches on 4 ranks"),
            (ScheduleRequest(kind: .gpipe, ranks: 0), "gpipe needs at least 1 rank, got 0"),
        ]
        for (request, message) in cases {
            XCTAssertThrowsError(try PipelinePlan(request: request, unitCosts: costs), "\(request)") { error in
                XCTAssertEqual("\(error)", message)
            }
        }
        let batch = TokenBatch.random(vocabularySize: 64, batchSize: 2, sequenceLength: 4, seed: 1)
        XCTAssertThrowsError(try batch.split(into: 3)) { error in
            XCTAssertEqual("\(error)", "cannot split a batch of 2 samples into 3 micro-batches; use a batch size of at least 3")
        }
    }
}

/// LLaMa with `tie_word_embeddings`: one parameter, `model.embed_tokens.weight`, read by the
/// embedding on the first stage and by lm_head on the last, kept identical across ranks.
final class TiedEmbeddingTests: XCTestCase {
    static let model: LlamaConfig = {
        var config = PipelineEquivalenceTests.model
        config.tieWordEmbeddings = true
        return config
    }()

    func testEveryScheduleWithAndWithoutTwoBPMatchesOneDevice() throws {
        var checked = 0
        for kind in ScheduleKind.allCases {
            for ranks in 1...4 {
                for twoBP in [false, true] {
                    let request = ScheduleRequest(kind: kind, ranks: ranks, twoBP: twoBP)
                    let microBatches = try request.resolved().microBatches
                    let batch = TokenBatch.random(vocabularySize: Self.model.vocabSize, batchSize: microBatches, sequenceLength: 4, seed: 7)
                    let report = try XCTUnwrap(RankLauncher.run(.threads, ranks: ranks, receiveTimeout: 30) { transport in
                        try PipelineVerification.run(model: Self.model, request: request, batch: batch, seed: 7, transport: transport)
                    })
                    XCTAssertTrue(report.agrees(tolerance: 1e-5), "\(request), tied: \(report)")
                    XCTAssertEqual(report.parameterCount, try LlamaModel(config: Self.model, seed: 0).parameters.count,
                                   "the tied matrix counts once")
                    checked += 1
                }
            }
        }
        XCTAssertEqual(checked, ScheduleKind.allCases.count * 8)
    }

    /// After every optimizer step, every rank's copy of the tied matrix holds the same bits,
    /// and the run follows the one-device run to rounding.
    func testCopiesStayBitIdenticalAcrossRanksAfterEveryStep() throws {
        let batches = (0..<4).map { TokenBatch.random(vocabularySize: Self.model.vocabSize, batchSize: 4, sequenceLength: 4, seed: UInt64(10 + $0)) }
        func train(_ request: ScheduleRequest) throws -> (losses: [Double], copies: [[[Float]]]) {
            let plan = try PipelinePlan(request: request, model: Self.model, sampleLength: 4)
            let perRank = try RankThreads.run(transports: ThreadTransport.group(ranks: request.ranks, receiveTimeout: 30)) { transport in
                let worker = try StageWorker(plan: plan, model: Self.model, seed: 3, transport: transport)
                var losses: [Double] = []
                var copies: [[Float]] = []
                for batch in batches {
                    let result = try worker.computeGradients(batch, clockOrigin: 0)
                    let sums = try transport.allReduceSum([result.loss.first ?? 0, worker.squaredGradientNorm()])
                    try worker.optimizer.update(learningRate: 1e-2, globalGradientNorm: sums[1].squareRoot())
                    losses.append(sums[0])
                    copies.append(worker.parameters.first { $0.name == "model.embed_tokens.weight" }?.value.toArray() ?? [])
                }
                return (losses: losses, copies: copies)
            }
            // copies[step][rank], empty where a rank holds no copy.
            let copies = batches.indices.map { step in perRank.map { $0.copies[step] } }
            return (perRank[0].losses, copies)
        }
        let reference = try train(ScheduleRequest(kind: .gpipe, ranks: 1))
        let initial = try XCTUnwrap(LlamaModel(config: Self.model, seed: 3).parameters.first { $0.name == "model.embed_tokens.weight" }).value.toArray()
        for request in [ScheduleRequest(kind: .oneFOneB1, ranks: 2, twoBP: true), ScheduleRequest(kind: .oneFOneB1, ranks: 4, twoBP: true),
                        ScheduleRequest(kind: .zeroBubbleV, ranks: 2), ScheduleRequest(kind: .interleaved, ranks: 2, twoBP: true)] {
            let run = try train(request)
            for (step, copies) in run.copies.enumerated() {
                let held = copies.filter { !$0.isEmpty }
                XCTAssertGreaterThanOrEqual(held.count, 1, "\(request)")
                XCTAssertTrue(held.allSatisfy { $0 == held[0] }, "\(request): copies differ after step \(step + 1)")
                XCTAssertNotEqual(held[0], initial, "\(request): the matrix moved")
            }
            for (loss, expected) in zip(run.losses, reference.losses) {
                XCTAssertEqual(loss, expected, accuracy: 1e-5 * expected, "\(request)")
            }
        }
    }
}
