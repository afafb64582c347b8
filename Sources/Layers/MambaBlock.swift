import Tensor

/// One Mamba layer, Hugging Face `MambaBlock`, on [batch, length, hidden]:
///
///     out = x + mixer(norm(x))
///
/// with `norm` a `MambaRMSNorm` (the LLaMa RMSNorm, eps `layer_norm_epsilon`). The residual add is done in place
/// on the mixer's fresh output, and p1 adds the residual gradient into the norm's fresh dx (dy itself is stashed by
/// out_proj for p2, so it is never written). p2 is the mixer's and the norm's p2.
public final class MambaBlock: Layer {
    public let norm: RMSNorm
    public let mixer: MambaMixer
    public let parameters: [Parameter]

    /// `eps` is `layer_norm_epsilon`.
    public init(_ configuration: MambaMixerConfiguration, eps: Float = 1e-5) throws {
        norm = RMSNorm(size: configuration.hiddenSize, eps: eps)
        mixer = try MambaMixer(configuration)
        parameters = prefixedParameters([("norm", norm), ("mixer", mixer)])
    }

    public var hiddenSize: Int { mixer.hiddenSize }

    public func forward(_ input: Tensor, microBatch: Int) throws -> Tensor {
        _ = try checkedSequenceShape(of: input, size: hiddenSize, layer: "MambaBlock")
        let output = try mixer.forward(norm.forward(input, microBatch: microBatch), microBatch: microBatch)
        output.add(input)
        return output
    }

    /// The forward computation alone, saving nothing (for inference).
    public func apply(_ input: Tensor) throws -> Tensor {
        _ = try checkedSequenceShape(of: input, size: hiddenSize, layer: "MambaBlock")
        let output = try mixer.apply(norm.apply(input))
        output.add(input)
        return output
    }

    public func backwardInput(_ outputGradient: Tensor, microBatch: Int) throws -> Tensor {
        let inputGradient = try norm.backwardInput(mixer.backwardInput(outputGradient, microBatch: microBatch), microBatch: microBatch)
        inputGradient.add(outputGradient)
        return inputGradient
    }

    public func backwardWeight(_ work: WeightGradientWork) throws {
        try mixer.backwardWeight(work)
        try norm.backwardWeight(work)
    }
}
