import Models
import Pipeline
import Schedules
import Tensor
import Training
import XCTest

/// ResNet through every schedule: a pipelined step (activations changing shape at every boundary,
/// batch norms on each micro-batch's statistics) equals one device running the same micro-batches in
/// the same order, gradients and running statistics alike, on threads and under mpirun.
final class ResNetPipelineTests: XCTestCase {
    static let model = ResNetConfig.named.first { $0.name == "resnet-tiny" }!.config

    func verify(_ request: ScheduleRequest, samplesPerMicroBatch: Int, seed: UInt64 = 3) throws -> VerificationReport {
        let microBatches = try request.resolved().microBatches
        let batch = Self.model.randomBatch(samples: samplesPerMicroBatch * microBatches, sampleLength: Self.model.imageSize, seed: seed)
        let report = try RankLauncher.run(.threads, ranks: request.ranks, receiveTimeout: 30) { transport in
            try PipelineVerification.run(model: Self.model, request: request, batch: batch, seed: seed, transport: transport)
        }
        return try XCTUnwrap(report)
    }

    func testEveryScheduleWithAndWithoutTwoBPMatchesOneDeviceOnTwoAndFourStages() throws {
        let parameters = try Self.model.makeModel(seed: 0).parameters.count
        let buffers = try Self.model.makeModel(seed: 0).buffers.count
        for ranks in [2, 4] {
            for kind in ScheduleKind.allCases {
                for twoBP in [false, true] {
                    let request = ScheduleRequest(kind: kind, ranks: ranks, twoBP: twoBP)
                    // One image per micro-batch on 4 ranks (a batch norm of the last stage still sees 2 × 2 pixels), 2 on 2.
                    let report = try verify(request, samplesPerMicroBatch: 6 / (ranks + 1))
                    let context = "\(request), OpenBLAS kernel \(BLAS.coreName)"
                    XCTAssertTrue(report.agrees(tolerance: 1e-5), "\(context): \(report)")
                    XCTAssertEqual(report.parameterCount, parameters, context)
                    XCTAssertEqual(report.bufferCount, buffers, context)
                    XCTAssertLessThanOrEqual(report.maxRelativeBufferDifference, 1e-6, "\(context): running statistics")
                    XCTAssertEqual(report.pipelineTerms.count, 2, "loss and accuracy")
                }
            }
        }
    }

    func testMPIVerifyPassesForEveryScheduleOnTwoAndFourRanks() throws {
        for ranks in [2, 4] {
            for kind in ScheduleKind.allCases {
                for twoBP in [false, true] {
                    let arguments = ["verify", "--transport", "mpi", "--model", "resnet-tiny", "--stages", String(ranks), "--schedule", kind.rawValue]
                        + (twoBP ? ["--2bp"] : [])
                    let job = try MPIJob.run(ranks: ranks, executable: "twobp", arguments)
                    job.assertSucceeded()
                    job.assertOutput(contains: "OK: \(kind.rawValue)\(twoBP ? " + 2BP" : "") on \(ranks) stages")
                }
            }
        }
    }
}
