import Tensor

/// One pre-norm LLaMa decoder layer, Hugging Face `LlamaDecoderLayer`, on [batch, length, hiddenSize]:
///
///     h   = x + self_attn(input_layernorm(x))
///     out = h + mlp(post_attention_layernorm(h))
///
/// The residual adds are done in place on the sublayers' fresh outputs (which they never keep),
/// and p1 adds the residual gradient into the norms' fresh dx (dy itself is stashed by the
/// sublayers for p2, so it is never written). p2 is every sublayer's p2.
public final class TransformerBlock: Layer {
    public let inputLayernorm: RMSNorm
    public let selfAttention: CausalSelfAttention
    public let postAttentionLayernorm: RMSNorm
    public let mlp: SwiGLUMLP
    public let parameters: [Parameter]

    public init(hiddenSize: Int, intermediateSize: Int, headCount: Int, keyValueHeadCount: Int? = nil,
                eps: Float = 1e-5, rotary: RotaryEmbedding) {
        inputLayernorm = RMSNorm(size: hiddenSize, eps: eps)
        selfAttention = CausalSelfAttention(hiddenSize: hiddenSize, headCount: headCount,
                                            keyValueHeadCount: keyValueHeadCount, rotary: rotary)
        postAttentionLayernorm = RMSNorm(size: hiddenSize, eps: eps)
        mlp = SwiGLUMLP(hiddenSize: hiddenSize, intermediateSize: intermediateSize)
        parameters = prefixedParameters([("input_layernorm", inputLayernorm), ("self_attn", selfAttention),
                                         ("post_attention_layernorm", postAttentionLayernorm), ("mlp", mlp)])
    }

    public var hiddenSize: Int { selfAttention.hiddenSize }

    public func forward(_ input: Tensor, microBatch: Int) throws -> Tensor {
        _ = try checkedSequenceShape(of: input, size: hiddenSize, layer: "TransformerBlock")
        let residual = try selfAttention.forward(inputLayernorm.forward(input, microBatch: microBatch), microBatch: microBatch)
        residual.add(input)
        let output = try mlp.forward(postAttentionLayernorm.forward(residual, microBatch: microBatch), microBatch: microBatch)
        output.add(residual)
        return output
    }

    /// The forward computation alone, saving nothing (for inference).
    public func apply(_ input: Tensor) throws -> Tensor {
        _ = try checkedSequenceShape(of: input, size: hiddenSize, layer: "TransformerBlock")
        let residual = try selfAttention.apply(inputLayernorm.apply(input))
        residual.add(input)
        let output = try mlp.apply(postAttentionLayernorm.apply(residual))
        output.add(residual)
        return output
    }

    public func backwardInput(_ outputGradient: Tensor, microBatch: Int) throws -> Tensor {
        let residualGradient = try postAttentionLayernorm.backwardInput(
            mlp.backwardInput(outputGradient, microBatch: microBatch), microBatch: microBatch)
        residualGradient.add(outputGradient)
        let inputGradient = try inputLayernorm.backwardInput(
            selfAttention.backwardInput(residualGradient, microBatch: microBatch), microBatch: microBatch)
        inputGradient.add(residualGradient)
        return inputGradient
    }

    public func backwardWeight(_ work: WeightGradientWork) throws {
        for layer in [mlp, postAttentionLayernorm, selfAttention, inputLayernorm] as [Layer] {
            try layer.backwardWeight(work)
        }
    }
}
