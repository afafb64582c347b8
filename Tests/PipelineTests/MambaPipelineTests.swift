import Foundation
import Models
import Pipeline
import Schedules
import Tensor
import Training
import XCTest

/// Mamba through every schedule: a pipelined step gives the loss and gradients of the same step on one device,
/// with the embedding tied to lm_head across the first and last stage (`tie_word_embeddings`, Mamba's default).
final class MambaPipelineEquivalenceTests: XCTestCase {
    /// Eight small blocks, so interleaved and zb-v on 4 ranks have a block per model stage.
    static let model = MambaConfig(vocabSize: 64, hiddenSize: 8, numHiddenLayers: 8, stateSize: 4, convKernel: 3)
    static let sequenceLength = 5

    func testEveryScheduleWithAndWithoutTwoBPMatchesOneDeviceOnTwoAndFourStages() throws {
        XCTAssertTrue(Self.model.tieWordEmbeddings)
        let parameterCount = try Self.model.makeModel(seed: 0).parameters.count
        var checked = 0
        for kind in ScheduleKind.allCases {
            for ranks in [2, 4] {
                for twoBP in [false, true] {
                    let request = ScheduleRequest(kind: kind, ranks: ranks, twoBP: twoBP)
                    let microBatches = try request.resolved().microBatches
                    let batch = TokenBatch.random(vocabularySize: Self.model.vocabSize, batchSize: microBatches + 1,
                                                  sequenceLength: Self.sequenceLength, seed: 11)
                    let report = try XCTUnwrap(RankLauncher.run(.threads, ranks: ranks, receiveTimeout: 30) { transport in
                        try PipelineVerification.run(model: Self.model, request: request, batch: batch, seed: 5, transport: transport)
                    })
                    let context = "\(request), OpenBLAS kernel \(BLAS.coreName): \(report)"
                    XCTAssertTrue(report.agrees(tolerance: 1e-5), context)
                    XCTAssertLessThanOrEqual(report.maxRelativeGradientDifference, 1e-5, context)
                    XCTAssertEqual(report.pipelineLoss, report.referenceLoss, accuracy: 1e-6 * abs(report.referenceLoss), context)
                    XCTAssertEqual(report.parameterCount, parameterCount, "\(request): the tied matrix counts once")
                    checked += 1
                }
            }
        }
        XCTAssertEqual(checked, ScheduleKind.allCases.count * 4)
    }

    /// After every optimizer step both ranks' copies of the tied matrix hold the same bits, and the run follows the
    /// one-device run to rounding.
    func testTiedCopiesStayBitIdenticalAcrossRanksAfterEveryStep() throws {
        let model = Self.model
        let batches = (0..<3).map { TokenBatch.random(vocabularySize: model.vocabSize, batchSize: 8, sequenceLength: 5, seed: UInt64(20 + $0)) }
        func train(_ request: ScheduleRequest) throws -> (losses: [Double], copies: [[[Float]]]) {
            let plan = try PipelinePlan(request: request, model: model, sampleLength: 5)
            let perRank = try RankThreads.run(transports: ThreadTransport.group(ranks: request.ranks, receiveTimeout: 30)) { transport in
                let worker = try StageWorker(plan: plan, model: model, seed: 3, transport: transport)
                var losses: [Double] = []
                var copies: [[Float]] = []
                for batch in batches {
                    let result = try worker.computeGradients(batch, clockOrigin: 0)
                    let sums = try transport.allReduceSum([result.loss.first ?? 0, worker.squaredGradientNorm()])
                    try worker.optimizer.update(learningRate: 1e-2, globalGradientNorm: sums[1].squareRoot())
                    losses.append(sums[0])
                    copies.append(worker.parameters.first { $0.name == "backbone.embeddings.weight" }?.value.toArray() ?? [])
                }
                return (losses: losses, copies: copies)
            }
            return (perRank[0].losses, batches.indices.map { step in perRank.map { $0.copies[step] } })
        }
        let reference = try train(ScheduleRequest(kind: .gpipe, ranks: 1))
        for request in [ScheduleRequest(kind: .oneFOneB1, ranks: 4, twoBP: true), ScheduleRequest(kind: .interleaved, ranks: 2, twoBP: true),
                        ScheduleRequest(kind: .zeroBubbleV, ranks: 2)] {
            let run = try train(request)
            // zb-v's V puts the first and the last model stage on rank 0, which then holds the only copy.
            let holders = request.kind == .zeroBubbleV ? 1 : 2
            for (step, copies) in run.copies.enumerated() {
                let held = copies.filter { !$0.isEmpty }
                XCTAssertEqual(held.count, holders, "\(request): ranks holding a copy")
                XCTAssertTrue(held.allSatisfy { $0 == held[0] }, "\(request): copies differ after step \(step + 1)")
            }
            for (loss, expected) in zip(run.losses, reference.losses) {
                XCTAssertEqual(loss, expected, accuracy: 1e-5 * expected, "\(request)")
            }
        }
    }
}

/// The same Mamba pipeline across processes: `twobp verify` under `mpirun`, one rank per stage.
final class MambaMPIPipelineTests: XCTestCase {
    func testVerifyPassesForEveryScheduleOnTwoAndFourRanks() throws {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("twobp-mpi-mamba-\(UUID().uuidString).json")
        try MambaPipelineEquivalenceTests.model.jsonData().write(to: url)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        for ranks in [2, 4] {
            for kind in ScheduleKind.allCases {
                for twoBP in [false, true] {
                    let arguments = ["verify", "--transport", "mpi", "--model", url.path, "--seq-len", "5",
                                     "--stages", String(ranks), "--schedule", kind.rawValue] + (twoBP ? ["--2bp"] : [])
                    let job = try MPIJob.run(ranks: ranks, executable: "twobp", arguments)
                    job.assertSucceeded()
                    job.assertOutput(contains: "OK: \(kind.rawValue)\(twoBP ? " + 2BP" : "") on \(ranks) stages")
                }
            }
        }
    }
}
