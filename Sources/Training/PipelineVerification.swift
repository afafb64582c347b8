import Foundation
import Layers
import Models
import Pipeline
import Schedules
import Tensor

/// How far a pipelined step is from the same step on one device.
public struct VerificationReport: Codable {
    public var pipelineLoss: Double
    public var referenceLoss: Double
    /// Over all parameters, the largest ‖g_pipeline − g_reference‖ / ‖g_reference‖.
    public var maxRelativeGradientDifference: Double
    /// The parameter where that largest difference occurs.
    public var worstParameter: String
    public var parameterCount: Int

    public var lossDifference: Double { abs(pipelineLoss - referenceLoss) }

    /// Whether the two agree to `tolerance` in relative gradient difference and in loss (relative).
    public func agrees(tolerance: Double) -> Bool {
        maxRelativeGradientDifference <= tolerance && lossDifference <= tolerance * Swift.max(1, abs(referenceLoss))
    }
}

/// Runs one training step's forward and backward pipelined, and the same step
/// on one device over the whole batch, from the same weights and data, and
/// compares loss and every parameter's gradient.
public enum PipelineVerification {
    /// Pipelined step on `transport` (every rank calls this); returns the report on rank 0.
    /// The reference runs on rank 0 alone, on its own single-rank transport.
    public static func run(model: LlamaConfig, request: ScheduleRequest, batch: TokenBatch, seed: UInt64,
                           transport: Transport) throws -> VerificationReport? {
        let plan = try PipelinePlan(request: request, unitCosts: model.unitCosts(sequenceLength: batch.sequenceLength))
        let worker = try StageWorker(plan: plan, config: model, seed: seed, transport: transport)
        let result = try worker.computeGradients(batch, clockOrigin: DispatchTime.now().uptimeNanoseconds)
        let loss = try transport.allReduceSum([result.loss])[0]
        let gradients = try ParameterGathering.gather(worker.parameters.map { (name: $0.name, tensor: $0.gradient) }, over: transport)
        guard let gradients else { return nil }
        let pipelined = try SafeTensorsArchive(files: gradients, source: "the pipeline's gradients")

        let referenceTransport = ThreadTransport.group(ranks: 1)[0]
        let referencePlan = try PipelinePlan(request: ScheduleRequest(kind: .naive, ranks: 1), unitCosts: model.unitCosts(sequenceLength: batch.sequenceLength))
        let reference = try StageWorker(plan: referencePlan, config: model, seed: seed, transport: referenceTransport)
        let referenceLoss = try reference.computeGradients(batch, clockOrigin: DispatchTime.now().uptimeNanoseconds).loss

        var worst = (difference: 0.0, name: "")
        for parameter in reference.parameters {
            let other = try pipelined.tensor(parameter.name, shape: parameter.gradient.shape)
            var differenceSquared = 0.0
            var referenceSquared = 0.0
            for i in 0..<parameter.gradient.count {
                let expected = Double(parameter.gradient[i])
                let delta = Double(other[i]) - expected
                differenceSquared += delta * delta
                referenceSquared += expected * expected
            }
            let relative = differenceSquared == 0 ? 0 : (differenceSquared / Swift.max(referenceSquared, .leastNormalMagnitude)).squareRoot()
            if relative > worst.difference || worst.name.isEmpty { worst = (relative, parameter.name) }
        }
        guard pipelined.names.count == reference.parameters.count else {
            throw TwoBPError("the pipeline has \(pipelined.names.count) parameters, one device \(reference.parameters.count)")
        }
        return VerificationReport(pipelineLoss: loss, referenceLoss: referenceLoss,
                                  maxRelativeGradientDifference: worst.difference, worstParameter: worst.name,
                                  parameterCount: reference.parameters.count)
    }

    /// A batch of random tokens, for verifying without a corpus.
    public static func randomBatch(vocabularySize: Int, batchSize: Int, sequenceLength: Int, seed: UInt64) -> TokenBatch {
        var generator = SeededGenerator(seed: seed ^ 0x5EED_BA7C)
        let stream = (0...(batchSize * sequenceLength)).map { _ in Int32(generator.next() % UInt64(vocabularySize)) }
        return TokenBatch(tokens: Array(stream.dropLast()), targets: Array(stream.dropFirst()),
                          batchSize: batchSize, sequenceLength: sequenceLength,
                          lossWeight: 1 / Float(batchSize * sequenceLength))
    }
}
