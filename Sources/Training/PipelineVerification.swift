import Checkpoints
import Foundation
import Layers
import Models
import Pipeline
import Schedules
import Tensor

/// How far a pipelined step is from the same step on one device.
public struct VerificationReport: Codable, CustomStringConvertible {
    public var pipelineLoss: Double
    public var referenceLoss: Double
    /// Every loss term of the pipelined step and of the reference (`ModelConfig.lossTerms`).
    public var pipelineTerms: [Double]
    public var referenceTerms: [Double]
    /// Over all parameters, the largest ‖g_pipeline − g_reference‖ / ‖g_reference‖.
    public var maxRelativeGradientDifference: Double
    /// The parameter where that largest difference occurs.
    public var worstParameter: String
    public var parameterCount: Int

    /// Over all buffers (BatchNorm statistics after the step), the largest relative difference.
    public var maxRelativeBufferDifference: Double
    public var bufferCount: Int

    public var lossDifference: Double { abs(pipelineLoss - referenceLoss) }

    /// Whether the two agree to `tolerance` in relative gradient and buffer difference and in every
    /// loss term (relative to the larger of 1 and its size).
    public func agrees(tolerance: Double) -> Bool {
        maxRelativeGradientDifference <= tolerance && maxRelativeBufferDifference <= tolerance
            && zip(pipelineTerms, referenceTerms).allSatisfy { abs($0 - $1) <= tolerance * Swift.max(1, abs($1)) }
    }

    public var description: String {
        "loss \(pipelineLoss) vs \(referenceLoss), gradients within \(maxRelativeGradientDifference) (\(worstParameter)), buffers within \(maxRelativeBufferDifference)"
    }
}

/// Runs one training step's forward and backward pipelined, and the same step
/// on one device over the whole batch, from the same weights and data, and
/// compares loss and every parameter's gradient.
public enum PipelineVerification {
    /// Pipelined step on `transport` (every rank calls this); returns the report on rank 0.
    /// The reference runs on rank 0 alone, on its own single-rank transport, over the same
    /// micro-batches in the same order (BatchNorm's statistics are per micro-batch, so the
    /// whole batch as one micro-batch would not be the same step).
    public static func run(model: any ModelConfig, request: ScheduleRequest, batch: any MicroBatch, seed: UInt64,
                           transport: Transport) throws -> VerificationReport? {
        let sampleLength = batch.sampleLength
        let plan = try PipelinePlan(request: request, model: model, sampleLength: sampleLength)
        let worker = try StageWorker(plan: plan, model: model, seed: seed, transport: transport)
        let result = try worker.computeGradients(batch, clockOrigin: DispatchTime.now().uptimeNanoseconds)
        let termCount = model.lossTerms.count
        let terms = try transport.allReduceSum(result.loss.isEmpty ? Array(repeating: 0, count: termCount) : result.loss)
        let gradients = try ParameterGathering.gather(worker.ownedParameters.map { (name: $0.name, tensor: $0.gradient) },
                                                      buffers: worker.buffers, over: transport)
        guard let gradients else { return nil }
        let pipelined = try SafeTensorsArchive(files: gradients, source: "the pipeline's gradients")

        let referenceTransport = ThreadTransport.group(ranks: 1)[0]
        let microBatches = plan.schedule.microBatches
        let referencePlan = try PipelinePlan(request: ScheduleRequest(kind: .gpipe, ranks: 1, microBatches: microBatches),
                                             model: model, sampleLength: sampleLength)
        let reference = try StageWorker(plan: referencePlan, model: model, seed: seed, transport: referenceTransport)
        let referenceTerms = try reference.computeGradients(batch, clockOrigin: DispatchTime.now().uptimeNanoseconds).loss

        var worst = (difference: 0.0, name: "")
        for parameter in reference.parameters {
            let relative = relativeDifference(try pipelined.tensor(parameter.name, shape: parameter.gradient.shape), parameter.gradient)
            if relative > worst.difference || worst.name.isEmpty { worst = (relative, parameter.name) }
        }
        guard pipelined.names.count == reference.parameters.count + reference.buffers.count else {
            throw TwoBPError("the pipeline has \(pipelined.names.count) parameters and buffers, one device \(reference.parameters.count + reference.buffers.count)")
        }
        var worstBuffer = 0.0
        for buffer in reference.buffers where buffer.dtype == .float32 {
            let values = Tensor(zeros: buffer.shape)
            _ = values.buffer.update(from: buffer.floats)
            let other = Buffer(name: buffer.name, shape: buffer.shape, dtype: .float32)
            try pipelined.load(into: [], buffers: [other])
            let otherValues = Tensor(zeros: buffer.shape)
            _ = otherValues.buffer.update(from: other.floats)
            worstBuffer = Swift.max(worstBuffer, relativeDifference(otherValues, values))
        }
        return VerificationReport(pipelineLoss: terms[0], referenceLoss: referenceTerms[0],
                                  pipelineTerms: terms, referenceTerms: referenceTerms,
                                  maxRelativeGradientDifference: worst.difference, worstParameter: worst.name,
                                  parameterCount: reference.parameters.count,
                                  maxRelativeBufferDifference: worstBuffer, bufferCount: reference.buffers.count)
    }

    /// ‖a − b‖ / ‖b‖ in Double (0 when both are zero).
    static func relativeDifference(_ a: Tensor, _ b: Tensor) -> Double {
        var differenceSquared = 0.0
        var referenceSquared = 0.0
        for i in 0..<b.count {
            let expected = Double(b[i])
            let delta = Double(a[i]) - expected
            differenceSquared += delta * delta
            referenceSquared += expected * expected
        }
        return differenceSquared == 0 ? 0 : (differenceSquared / Swift.max(referenceSquared, .leastNormalMagnitude)).squareRoot()
    }
}
