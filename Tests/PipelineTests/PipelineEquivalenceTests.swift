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
        let batch = PipelineVerification.randomBatch(vocabularySize: Self.model.vocabSize, batchSize: batchSize ?? microBatches,
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
        let costs = Self.model.unitCosts(sequenceLength: Self.sequenceLength)
        let cases: [(ScheduleRequest, String)] = [
            (ScheduleRequest(kind: .gpipe, ranks: 9), "9 pipeline stages need at least 9 transformer layers; the model has 8"),
            (ScheduleRequest(kind: .interleaved, ranks: 4, chunksPerRank: 3), "interleaved needs 12 model stages (4 ranks × 3 chunks) but the model has only 8 transformer layers"),
            (ScheduleRequest(kind: .gpipe, ranks: 2, microBatches: 0), "gpipe needs at least 1 micro-batch, got 0"),
            (ScheduleRequest(kind: .interleaved, ranks: 4, microBatches: 2), "interleaved needs the micro-batches to be a multiple of the ranks (as Megatron does), got 2 micro-batches on 4 ranks"),
            (ScheduleRequest(kind: .gpipe, ranks: 0), "gpipe needs at least 1 rank, got 0"),
        ]
        for (request, message) in cases {
            XCTAssertThrowsError(try PipelinePlan(request: request, unitCosts: costs), "\(request)") { error in
                XCTAssertEqual("\(error)", message)
            }
        }
        let batch = PipelineVerification.randomBatch(vocabularySize: 64, batchSize: 2, sequenceLength: 4, seed: 1)
        XCTAssertThrowsError(try batch.split(into: 3)) { error in
            XCTAssertEqual("\(error)", "cannot split a batch of 2 sequences into 3 micro-batches; use a batch size of at least 3")
        }
    }
}
