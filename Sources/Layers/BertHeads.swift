import Foundation
import Tensor

/// BERT's masked-LM head, Hugging Face `BertLMPredictionHead` and its loss:
/// `transform.dense` (+bias) → GELU → `transform.LayerNorm` → `decoder` (weight [vocab, hidden],
/// which a model ties to the word embeddings, plus the head's own `bias` [vocab]) → softmax
/// cross-entropy against targets, where `ignoreIndex` (-100) marks a position that is not predicted.
///
/// Not a `Layer`: forward ends in `loss = Σ_predicted lossWeight · CE` (Double), p1 starts from it.
/// Only the predicted rows are gathered and sent through the transform and the decoder: the loss
/// and every gradient are HF's (its ignored rows contribute exactly zero), at a fraction of the
/// FLOPs (BERT predicts ~15% of positions); dx is zero on the other rows. dlogits is known with the
/// loss, so forward writes it over the logits and keeps that. p1 is the decoder's, LayerNorm's,
/// GELU's and transform.dense's p1 (then a scatter into dx), p2 theirs, one GEMM per weight under
/// `.allPending`. Parameter names: `transform.dense.*`, `transform.LayerNorm.*`, `decoder.weight`,
/// `bias` (HF's `predictions.bias`, which it also aliases as `predictions.decoder.bias`).
public final class BertMaskedLMHead {
    /// The target of a position whose token is not predicted (PyTorch's `ignore_index`).
    public static let ignoreIndex: Int32 = -100

    public let hiddenSize: Int
    public let vocabularySize: Int
    public let transformDense: Linear
    public let gelu: GELU
    public let transformNorm: LayerNorm
    /// weight [vocab, hidden] (`decoder.weight`) and bias [vocab] (named `bias`).
    public let decoder: Linear
    public let parameters: [Parameter]

    private struct Saved {
        /// Row indices (into the input's [rows, hidden] view) of the predicted positions.
        let rows: [Int]
        let inputShape: [Int]
        /// lossWeight · (softmax − onehot), [rows.count, vocab].
        let logitsGradient: Tensor
    }

    private var saved = MicroBatchStore<Saved>("BertMaskedLMHead forward state")

    /// `decoderWeight`, when given, is the [vocabularySize, hiddenSize] matrix the decoder shares
    /// with the word embeddings (tied weights).
    public init(hiddenSize: Int, vocabularySize: Int, eps: Float = 1e-12, decoderWeight: Parameter? = nil) {
        self.hiddenSize = hiddenSize
        self.vocabularySize = vocabularySize
        transformDense = Linear(inputSize: hiddenSize, outputSize: hiddenSize, bias: true)
        gelu = GELU()
        transformNorm = LayerNorm(size: hiddenSize, eps: eps)
        decoder = Linear(inputSize: hiddenSize, outputSize: vocabularySize, bias: true, weight: decoderWeight)
        parameters = prefixedParameters([("transform.dense", transformDense), ("transform.LayerNorm", transformNorm)])
            + [decoder.weight.prefixed("decoder"), decoder.bias!]
    }

    /// Σ lossWeight · CE over the predicted positions of x [.., hiddenSize] (one target per row,
    /// `ignoreIndex` where nothing is predicted); saves dlogits under `microBatch`.
    public func forward(_ input: Tensor, targets: [Int32], lossWeight: Float, microBatch: Int) throws -> Double {
        let rows = try predictedRows(input, targets: targets)
        let logits = try decoder.forward(
            transformNorm.forward(
                gelu.forward(transformDense.forward(gatherRows(input, rows), microBatch: microBatch), microBatch: microBatch),
                microBatch: microBatch),
            microBatch: microBatch)
        let loss = crossEntropy(logits: logits.pointer, targets: rows.map { targets[$0] }, vocabularySize: vocabularySize,
                                lossWeight: lossWeight, writeGradient: true)
        try saved.put(Saved(rows: rows, inputShape: input.shape, logitsGradient: logits), for: microBatch)
        return loss
    }

    /// The forward loss alone, saving nothing (for evaluation).
    public func loss(_ input: Tensor, targets: [Int32], lossWeight: Float) throws -> Double {
        let rows = try predictedRows(input, targets: targets)
        let logits = decoder.apply(try transformNorm.apply(gelu.apply(transformDense.apply(gatherRows(input, rows)))))
        return crossEntropy(logits: logits.pointer, targets: rows.map { targets[$0] }, vocabularySize: vocabularySize,
                            lossWeight: lossWeight, writeGradient: false)
    }

    /// p1: dx [.., hiddenSize] of the loss, zero on the rows not predicted.
    public func backwardInput(microBatch: Int) throws -> Tensor {
        let (rows, gradient, shape) = try backwardPredictedRows(microBatch)
        let inputGradient = Tensor(zeros: shape)
        addRows(gradient, into: inputGradient, at: rows)
        return inputGradient
    }

    /// p1 that adds dx into `inputGradient` (the input's shape), for a last stage whose hidden
    /// states also feed the next-sentence head.
    public func backwardInput(microBatch: Int, accumulatingInto inputGradient: Tensor) throws {
        let (rows, gradient, shape) = try backwardPredictedRows(microBatch)
        precondition(inputGradient.shape == shape, "BertMaskedLMHead p1: dx \(inputGradient.shape) for x \(shape)")
        addRows(gradient, into: inputGradient, at: rows)
    }

    public func backwardWeight(_ work: WeightGradientWork) throws {
        for layer in [decoder, transformNorm, gelu, transformDense] as [Layer] { try layer.backwardWeight(work) }
    }

    /// Throws unless there is one target per row, each a vocabulary id or `ignoreIndex`.
    public func validate(targets: [Int32], rows: Int) throws {
        guard targets.count == rows else {
            throw TwoBPError("BertMaskedLMHead: \(targets.count) targets for \(rows) positions")
        }
        if let bad = targets.first(where: { $0 != Self.ignoreIndex && ($0 < 0 || Int($0) >= vocabularySize) }) {
            throw TwoBPError("BertMaskedLMHead: target id \(bad) is neither \(Self.ignoreIndex) nor in the vocabulary of \(vocabularySize)")
        }
    }

    /// The rows of x whose target is predicted, after checking x and the targets.
    private func predictedRows(_ input: Tensor, targets: [Int32]) throws -> [Int] {
        try validate(targets: targets, rows: checkedRowCount(of: input, size: hiddenSize, layer: "BertMaskedLMHead"))
        return targets.indices.filter { targets[$0] != Self.ignoreIndex }
    }

    /// The predicted rows, their dx [rows.count, hidden] and the input's shape.
    private func backwardPredictedRows(_ microBatch: Int) throws -> (rows: [Int], gradient: Tensor, shape: [Int]) {
        let state = try saved.take(microBatch)
        let gradient = try transformDense.backwardInput(
            gelu.backwardInput(
                transformNorm.backwardInput(decoder.backwardInput(state.logitsGradient, microBatch: microBatch), microBatch: microBatch),
                microBatch: microBatch),
            microBatch: microBatch)
        return (state.rows, gradient, state.inputShape)
    }
}

/// BERT's next-sentence head with the pooler it reads, Hugging Face `BertPooler` + `BertOnlyNSPHead`
/// and the loss: the first token of each sequence → `pooler.dense` (+bias) → tanh →
/// `seq_relationship` (hidden → 2, +bias) → softmax cross-entropy against a 0/1 label per sequence
/// (1: the second segment is a random one).
///
/// Not a `Layer`: forward ends in `loss = Σ_sequences lossWeight · CE` (Double), p1 starts from it;
/// dx is zero except on each sequence's first row. p1 is seq_relationship's p1, tanh' = 1 − y² and
/// the pooler's p1; p2 theirs. Parameter names: `pooler.dense.*`, `seq_relationship.*`.
public final class BertNextSentenceHead {
    public let hiddenSize: Int
    public let poolerDense: Linear
    public let seqRelationship: Linear
    public let parameters: [Parameter]

    private struct Saved {
        /// tanh(pooler.dense(first tokens)), [batch, hidden] (also seq_relationship's saved input).
        let pooled: Tensor
        /// lossWeight · (softmax − onehot), [batch, 2].
        let logitsGradient: Tensor
        let inputShape: [Int]
    }

    private var saved = MicroBatchStore<Saved>("BertNextSentenceHead forward state")

    public init(hiddenSize: Int) {
        self.hiddenSize = hiddenSize
        poolerDense = Linear(inputSize: hiddenSize, outputSize: hiddenSize, bias: true)
        seqRelationship = Linear(inputSize: hiddenSize, outputSize: 2, bias: true)
        parameters = prefixedParameters([("pooler.dense", poolerDense), ("seq_relationship", seqRelationship)])
    }

    /// Σ lossWeight · CE over the sequences of x [batch, length, hiddenSize] against `labels` [batch]
    /// (0 or 1); saves dlogits under `microBatch`.
    public func forward(_ input: Tensor, labels: [Int32], lossWeight: Float, microBatch: Int) throws -> Double {
        try forwardScored(input, labels: labels, lossWeight: lossWeight, microBatch: microBatch).loss
    }

    /// `forward`, also returning Σ lossWeight · [argmax logits = label] (ties predict 0, as
    /// `torch.argmax`): with the step's weights, the next-sentence accuracy.
    public func forwardScored(_ input: Tensor, labels: [Int32], lossWeight: Float, microBatch: Int) throws
        -> (loss: Double, accuracy: Double) {
        let firstRows = try firstRows(input, labels: labels)
        let pooled = try poolerDense.forward(gatherRows(input, firstRows), microBatch: microBatch)
        tanhInPlace(pooled)
        let logits = try seqRelationship.forward(pooled, microBatch: microBatch)
        let accuracy = weightedCorrect(logits, labels: labels, lossWeight: lossWeight)
        let loss = crossEntropy(logits: logits.pointer, targets: labels, vocabularySize: 2, lossWeight: lossWeight, writeGradient: true)
        try saved.put(Saved(pooled: pooled, logitsGradient: logits, inputShape: input.shape), for: microBatch)
        return (loss, accuracy)
    }

    /// The forward loss alone, saving nothing (for evaluation).
    public func loss(_ input: Tensor, labels: [Int32], lossWeight: Float) throws -> Double {
        try scored(input, labels: labels, lossWeight: lossWeight).loss
    }

    /// `loss` and Σ lossWeight · [argmax logits = label], saving nothing (for evaluation).
    public func scored(_ input: Tensor, labels: [Int32], lossWeight: Float) throws -> (loss: Double, accuracy: Double) {
        let pooled = poolerDense.apply(gatherRows(input, try firstRows(input, labels: labels)))
        tanhInPlace(pooled)
        let logits = seqRelationship.apply(pooled)
        let accuracy = weightedCorrect(logits, labels: labels, lossWeight: lossWeight)
        return (crossEntropy(logits: logits.pointer, targets: labels, vocabularySize: 2, lossWeight: lossWeight, writeGradient: false),
                accuracy)
    }

    /// Σ lossWeight over the sequences whose logits [batch, 2] pick their label (1 only when its logit is larger).
    private func weightedCorrect(_ logits: Tensor, labels: [Int32], lossWeight: Float) -> Double {
        var correct = 0.0
        for (row, label) in labels.enumerated() where (logits[2 * row + 1] > logits[2 * row] ? 1 : 0) == label {
            correct += Double(lossWeight)
        }
        return correct
    }

    /// p1: dx [batch, length, hiddenSize] of the loss, zero but on each sequence's first token.
    public func backwardInput(microBatch: Int) throws -> Tensor {
        let (gradient, shape) = try backwardFirstRows(microBatch)
        let inputGradient = Tensor(zeros: shape)
        addRows(gradient, into: inputGradient, at: firstRowIndices(shape))
        return inputGradient
    }

    /// p1 that adds dx into `inputGradient` (the input's shape).
    public func backwardInput(microBatch: Int, accumulatingInto inputGradient: Tensor) throws {
        let (gradient, shape) = try backwardFirstRows(microBatch)
        precondition(inputGradient.shape == shape, "BertNextSentenceHead p1: dx \(inputGradient.shape) for x \(shape)")
        addRows(gradient, into: inputGradient, at: firstRowIndices(shape))
    }

    public func backwardWeight(_ work: WeightGradientWork) throws {
        try seqRelationship.backwardWeight(work)
        try poolerDense.backwardWeight(work)
    }

    /// Throws unless there is one label per sequence, each 0 or 1.
    public func validate(labels: [Int32], batchSize: Int) throws {
        guard labels.count == batchSize else {
            throw TwoBPError("BertNextSentenceHead: \(labels.count) labels for \(batchSize) sequences")
        }
        if let bad = labels.first(where: { $0 != 0 && $0 != 1 }) {
            throw TwoBPError("BertNextSentenceHead: next-sentence labels must be 0 or 1, got \(bad)")
        }
    }

    /// Row indices of each sequence's first token, after checking x and the labels.
    private func firstRows(_ input: Tensor, labels: [Int32]) throws -> [Int] {
        let (batch, _) = try checkedSequenceShape(of: input, size: hiddenSize, layer: "BertNextSentenceHead")
        try validate(labels: labels, batchSize: batch)
        return firstRowIndices(input.shape)
    }

    private func firstRowIndices(_ shape: [Int]) -> [Int] {
        (0..<shape[0]).map { $0 * shape[1] }
    }

    /// d(first tokens) [batch, hidden] and the input's shape.
    private func backwardFirstRows(_ microBatch: Int) throws -> (gradient: Tensor, shape: [Int]) {
        let state = try saved.take(microBatch)
        let pooledGradient = try seqRelationship.backwardInput(state.logitsGradient, microBatch: microBatch)
        for i in 0..<pooledGradient.count {
            let y = state.pooled[i]
            pooledGradient[i] *= 1 - y * y
        }
        return (try poolerDense.backwardInput(pooledGradient, microBatch: microBatch), state.inputShape)
    }

    private func tanhInPlace(_ tensor: Tensor) {
        for i in 0..<tensor.count { tensor[i] = Foundation.tanh(tensor[i]) }
    }
}

/// Both pre-training heads on the last encoder output, Hugging Face `BertPreTrainingHeads` plus
/// the pooler: `loss = masked-LM loss + next-sentence loss` (each Σ lossWeight · CE, the caller's
/// weights making each a mean over the step), dx their sum. Parameter names: `predictions.*`
/// (see `BertMaskedLMHead`), `pooler.dense.*`, `seq_relationship.*`; a model maps them to HF's
/// `cls.predictions.*`, `bert.pooler.*`, `cls.seq_relationship.*`.
public final class BertPreTrainingHeads {
    public let predictions: BertMaskedLMHead
    public let nextSentence: BertNextSentenceHead
    public let parameters: [Parameter]

    /// `decoderWeight`, when given, is the word-embedding matrix the masked-LM decoder is tied to.
    public init(hiddenSize: Int, vocabularySize: Int, eps: Float = 1e-12, decoderWeight: Parameter? = nil) {
        predictions = BertMaskedLMHead(hiddenSize: hiddenSize, vocabularySize: vocabularySize, eps: eps, decoderWeight: decoderWeight)
        nextSentence = BertNextSentenceHead(hiddenSize: hiddenSize)
        parameters = predictions.parameters.map { $0.prefixed("predictions") } + nextSentence.parameters
    }

    /// Both losses of x [batch, length, hiddenSize]; `maskedLMTargets` [batch · length] (-100 where not
    /// predicted), `nextSentenceLabels` [batch]. Both are checked before either head saves anything.
    public func forward(_ input: Tensor, maskedLMTargets: [Int32], maskedLMLossWeight: Float,
                        nextSentenceLabels: [Int32], nextSentenceLossWeight: Float, microBatch: Int) throws -> Double {
        try validate(input, maskedLMTargets: maskedLMTargets, nextSentenceLabels: nextSentenceLabels)
        let maskedLM = try predictions.forward(input, targets: maskedLMTargets, lossWeight: maskedLMLossWeight, microBatch: microBatch)
        let nextSentenceLoss = try nextSentence.forward(input, labels: nextSentenceLabels, lossWeight: nextSentenceLossWeight,
                                                        microBatch: microBatch)
        return maskedLM + nextSentenceLoss
    }

    /// The forward loss alone, saving nothing (for evaluation).
    public func loss(_ input: Tensor, maskedLMTargets: [Int32], maskedLMLossWeight: Float,
                     nextSentenceLabels: [Int32], nextSentenceLossWeight: Float) throws -> Double {
        try predictions.loss(input, targets: maskedLMTargets, lossWeight: maskedLMLossWeight)
            + nextSentence.loss(input, labels: nextSentenceLabels, lossWeight: nextSentenceLossWeight)
    }

    /// p1: dx [batch, length, hiddenSize] of both losses.
    public func backwardInput(microBatch: Int) throws -> Tensor {
        let inputGradient = try predictions.backwardInput(microBatch: microBatch)
        try nextSentence.backwardInput(microBatch: microBatch, accumulatingInto: inputGradient)
        return inputGradient
    }

    public func backwardWeight(_ work: WeightGradientWork) throws {
        try predictions.backwardWeight(work)
        try nextSentence.backwardWeight(work)
    }

    /// Throws unless x is [batch, length, hiddenSize] and the targets and labels fit it.
    public func validate(_ input: Tensor, maskedLMTargets: [Int32], nextSentenceLabels: [Int32]) throws {
        let (batch, length) = try checkedSequenceShape(of: input, size: predictions.hiddenSize, layer: "BertPreTrainingHeads")
        try predictions.validate(targets: maskedLMTargets, rows: batch * length)
        try nextSentence.validate(labels: nextSentenceLabels, batchSize: batch)
    }
}

/// Rows `rows` of x viewed as [rowCount, columnCount], stacked into a new [rows.count, columnCount].
private func gatherRows(_ input: Tensor, _ rows: [Int]) -> Tensor {
    let width = input.columnCount
    let gathered = Tensor(uninitialized: [rows.count, width])
    for (i, row) in rows.enumerated() {
        (gathered.pointer + i * width).update(from: input.pointer + row * width, count: width)
    }
    return gathered
}

/// target[rows[i]] += source[i], rows of columnCount values.
private func addRows(_ source: Tensor, into target: Tensor, at rows: [Int]) {
    let width = target.columnCount
    for (i, row) in rows.enumerated() {
        let (from, to) = (source.pointer + i * width, target.pointer + row * width)
        for j in 0..<width { to[j] += from[j] }
    }
}
