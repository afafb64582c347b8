import Tensor

/// One post-norm BERT encoder layer, Hugging Face `BertLayer` (`BertAttention` → `BertIntermediate`
/// → `BertOutput`), on [batch, length, hiddenSize]:
///
///     h   = LayerNorm(x + dropout(attention(x)))                     attention.output.LayerNorm
///     out = LayerNorm(h + dropout(output.dense(gelu(intermediate.dense(h)))))   output.LayerNorm
///
/// where `attention` is `BidirectionalSelfAttention` (q/k/v, masked softmax, probability dropout,
/// attention.output.dense). The dropouts are applied in place on the dense layers' fresh outputs and
/// the residual added in place after them; the layer norms keep those sums. p1 re-derives the
/// dropout masks from the saved context (see `Dropout`): the masked copy of the norm's dx goes to
/// the dense layer, the unmasked one is the residual's gradient. With dropout off nothing is copied.
///
/// Dropout sites: `dropoutSite` (attention probabilities), `dropoutSite + 1` (attention output),
/// `dropoutSite + 2` (feed-forward output); a model gives layer i the sites from 1 + 3i
/// (`dropoutSiteCount` = 3) so they are the same whatever the pipeline partition.
public final class BertLayer: Layer {
    /// Dropout sites each layer uses, consecutive from its `dropoutSite`.
    public static let dropoutSiteCount = 3

    public let attention: BidirectionalSelfAttention
    public let attentionOutputDropout: Dropout
    public let attentionOutputNorm: LayerNorm
    public let intermediateDense: Linear
    public let gelu: GELU
    public let outputDense: Linear
    public let outputDropout: Dropout
    public let outputNorm: LayerNorm
    public let parameters: [Parameter]
    /// The forward's dropout context (nil: nothing dropped), kept for p1.
    private var saved = MicroBatchStore<DropoutContext?>("BertLayer forward state")

    /// `hiddenDropout` is the config's `hidden_dropout_prob`, `attentionDropout` its
    /// `attention_probs_dropout_prob`; throws on a probability outside [0, 1) or heads that do not
    /// divide `hiddenSize`.
    public init(hiddenSize: Int, intermediateSize: Int, headCount: Int, eps: Float = 1e-12,
                hiddenDropout: Float = 0, attentionDropout: Float = 0, dropoutSite: UInt64 = 0) throws {
        attention = try BidirectionalSelfAttention(hiddenSize: hiddenSize, headCount: headCount,
                                                   dropout: Dropout(probability: attentionDropout, site: dropoutSite))
        attentionOutputDropout = try Dropout(probability: hiddenDropout, site: dropoutSite + 1)
        attentionOutputNorm = LayerNorm(size: hiddenSize, eps: eps)
        intermediateDense = Linear(inputSize: hiddenSize, outputSize: intermediateSize, bias: true)
        gelu = GELU()
        outputDense = Linear(inputSize: intermediateSize, outputSize: hiddenSize, bias: true)
        outputDropout = try Dropout(probability: hiddenDropout, site: dropoutSite + 2)
        outputNorm = LayerNorm(size: hiddenSize, eps: eps)
        parameters = prefixedParameters([
            ("attention", attention), ("attention.output.LayerNorm", attentionOutputNorm),
            ("intermediate.dense", intermediateDense), ("output.dense", outputDense), ("output.LayerNorm", outputNorm),
        ])
    }

    public var hiddenSize: Int { attention.hiddenSize }

    /// Forward with every key valid and no dropout.
    public func forward(_ input: Tensor, microBatch: Int) throws -> Tensor {
        try forward(input, attentionMask: nil, dropout: nil, microBatch: microBatch)
    }

    /// out [batch, length, hiddenSize] of x [batch, length, hiddenSize]; `attentionMask` nil means
    /// no padding, `dropout` nil means nothing is dropped (all three sites).
    public func forward(_ input: Tensor, attentionMask: AttentionMask?, dropout context: DropoutContext?,
                        microBatch: Int) throws -> Tensor {
        _ = try checkedSequenceShape(of: input, size: hiddenSize, layer: "BertLayer")
        let residual = try attention.forward(input, attentionMask: attentionMask, dropout: context, microBatch: microBatch)
        attentionOutputDropout.apply(residual, context: context)
        residual.add(input)
        let hidden = try attentionOutputNorm.forward(residual, microBatch: microBatch)
        let intermediate = try gelu.forward(intermediateDense.forward(hidden, microBatch: microBatch), microBatch: microBatch)
        let output = try outputDense.forward(intermediate, microBatch: microBatch)
        outputDropout.apply(output, context: context)
        output.add(hidden)
        let result = try outputNorm.forward(output, microBatch: microBatch)
        try saved.put(context, for: microBatch)
        return result
    }

    /// The forward computation alone, saving nothing and dropping nothing (for inference).
    public func apply(_ input: Tensor, attentionMask: AttentionMask? = nil) throws -> Tensor {
        _ = try checkedSequenceShape(of: input, size: hiddenSize, layer: "BertLayer")
        let residual = try attention.apply(input, attentionMask: attentionMask)
        residual.add(input)
        let hidden = try attentionOutputNorm.apply(residual)
        let output = outputDense.apply(gelu.apply(intermediateDense.apply(hidden)))
        output.add(hidden)
        return try outputNorm.apply(output)
    }

    public func backwardInput(_ outputGradient: Tensor, microBatch: Int) throws -> Tensor {
        let context = try saved.take(microBatch)
        let outputSumGradient = try outputNorm.backwardInput(outputGradient, microBatch: microBatch)
        let hiddenGradient = try intermediateDense.backwardInput(
            gelu.backwardInput(
                outputDense.backwardInput(outputDropout.applied(to: outputSumGradient, context: context), microBatch: microBatch),
                microBatch: microBatch),
            microBatch: microBatch)
        hiddenGradient.add(outputSumGradient)
        let residualGradient = try attentionOutputNorm.backwardInput(hiddenGradient, microBatch: microBatch)
        let inputGradient = try attention.backwardInput(attentionOutputDropout.applied(to: residualGradient, context: context),
                                                        microBatch: microBatch)
        inputGradient.add(residualGradient)
        return inputGradient
    }

    public func backwardWeight(_ work: WeightGradientWork) throws {
        for layer in [outputNorm, outputDense, gelu, intermediateDense, attentionOutputNorm, attention] as [Layer] {
            try layer.backwardWeight(work)
        }
    }
}
