import Foundation
import Models
import Pipeline
import Schedules
import Tensor
import Training
import XCTest

/// BERT through every schedule: the decoder on the last stage reads the word embeddings of the
/// first (one tied parameter), dropout is on, and samples are padded.
final class BertPipelineEquivalenceTests: XCTestCase {
    /// Eight narrow layers, so every schedule (interleaved and zb-v on 4 ranks included) has a layer per stage.
    static let model = BertConfig(vocabSize: BertVocabulary.size, hiddenSize: 16, numHiddenLayers: 8, numAttentionHeads: 2,
                                  intermediateSize: 32, maxPositionEmbeddings: 16, padTokenId: Int(BertVocabulary.pad))

    func testEveryScheduleWithAndWithoutTwoBPMatchesOneDeviceOnTwoAndFourStages() throws {
        let parameterCount = try Self.model.makeModel(seed: 0).parameters.count
        var checked = 0
        for kind in ScheduleKind.allCases {
            for ranks in [2, 4] {
                for twoBP in [false, true] {
                    let request = ScheduleRequest(kind: kind, ranks: ranks, twoBP: twoBP)
                    let microBatches = try request.resolved().microBatches
                    let batch = PreTrainingBatch.random(batchSize: 2 * microBatches, sequenceLength: 12, seed: 5)
                    XCTAssertTrue(batch.attentionMask.contains(0), "some samples are padded")
                    let report = try XCTUnwrap(RankLauncher.run(.threads, ranks: ranks, receiveTimeout: 30) { transport in
                        try PipelineVerification.run(model: Self.model, request: request, batch: batch, seed: 5, transport: transport)
                    })
                    XCTAssertTrue(report.agrees(tolerance: 1e-5), "\(request), kernel \(BLAS.coreName): \(report)")
                    XCTAssertEqual(report.parameterCount, parameterCount, "the tied matrix counts once")
                    XCTAssertEqual(report.pipelineTerms.count, 4)
                    checked += 1
                }
            }
        }
        XCTAssertEqual(checked, ScheduleKind.allCases.count * 4)
    }
}
