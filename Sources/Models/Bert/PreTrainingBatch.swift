import Layers
import Tensor

/// A micro-batch of BERT pre-training: `[CLS] A [SEP] B [SEP] [PAD]…` sequences with their token
/// types, padding mask, masked-LM labels and next-sentence labels (Hugging Face
/// `BertForPreTraining`'s `input_ids`, `token_type_ids`, `attention_mask`, `labels`,
/// `next_sentence_label`).
///
/// Loss weights are those of the whole step, so that summing micro-batch gradients gives the
/// batch's: `maskedLMLossWeight` = 1 / (positions predicted in the whole step) makes the masked-LM
/// loss HF's mean over predicted positions, `nextSentenceLossWeight` = 1 / (sequences in the step)
/// the next-sentence loss its mean over sequences. The batch also fixes its dropout masks
/// (`dropout`): run seed, step, and the index of its first sample in the step, which `samples`
/// advances, so a micro-batch drops what the same samples drop inside the whole batch.
public struct PreTrainingBatch: MicroBatch, Equatable {
    /// [batchSize, sequenceLength] token ids (`BertVocabulary`), row-major.
    public let tokens: [Int32]
    /// [batchSize, sequenceLength]: 0 for `[CLS] A [SEP]` and padding, 1 for `B [SEP]`.
    public let tokenTypes: [Int32]
    /// [batchSize, sequenceLength]: 1 for a real token, 0 for padding.
    public let attentionMask: [Int32]
    /// [batchSize, sequenceLength]: the original token where it is predicted, else `ignoreIndex`.
    public let maskedLMLabels: [Int32]
    /// [batchSize]: 0 when B follows A in the text, 1 when B comes from a random other place.
    public let nextSentenceLabels: [Int32]
    public let batchSize: Int
    public let sequenceLength: Int
    public let maskedLMLossWeight: Float
    public let nextSentenceLossWeight: Float
    /// The dropout masks of this micro-batch's training forward.
    public let dropout: DropoutContext

    /// The masked-LM label of a position that is not predicted (PyTorch's `ignore_index`).
    public static let ignoreIndex = BertMaskedLMHead.ignoreIndex

    /// Throws unless every per-position array has batchSize · sequenceLength entries and there is one
    /// next-sentence label per sequence.
    public init(tokens: [Int32], tokenTypes: [Int32], attentionMask: [Int32], maskedLMLabels: [Int32],
                nextSentenceLabels: [Int32], batchSize: Int, sequenceLength: Int, maskedLMLossWeight: Float,
                nextSentenceLossWeight: Float, dropout: DropoutContext) throws {
        let count = batchSize * sequenceLength
        guard batchSize >= 1, sequenceLength >= 1 else {
            throw TwoBPError("a pre-training batch needs at least one sequence of at least one token, got \(batchSize) x \(sequenceLength)")
        }
        for (name, array) in [("tokens", tokens), ("token types", tokenTypes), ("attention mask", attentionMask),
                              ("masked-LM labels", maskedLMLabels)] where array.count != count {
            throw TwoBPError("pre-training batch: \(array.count) \(name) for \(batchSize) sequences of \(sequenceLength)")
        }
        guard nextSentenceLabels.count == batchSize else {
            throw TwoBPError("pre-training batch: \(nextSentenceLabels.count) next-sentence labels for \(batchSize) sequences")
        }
        self.init(checkedTokens: tokens, tokenTypes: tokenTypes, attentionMask: attentionMask, maskedLMLabels: maskedLMLabels,
                  nextSentenceLabels: nextSentenceLabels, batchSize: batchSize, sequenceLength: sequenceLength,
                  maskedLMLossWeight: maskedLMLossWeight, nextSentenceLossWeight: nextSentenceLossWeight, dropout: dropout)
    }

    /// The memberwise initialiser, for arrays already known to fit.
    private init(checkedTokens tokens: [Int32], tokenTypes: [Int32], attentionMask: [Int32], maskedLMLabels: [Int32],
                 nextSentenceLabels: [Int32], batchSize: Int, sequenceLength: Int, maskedLMLossWeight: Float,
                 nextSentenceLossWeight: Float, dropout: DropoutContext) {
        self.tokens = tokens
        self.tokenTypes = tokenTypes
        self.attentionMask = attentionMask
        self.maskedLMLabels = maskedLMLabels
        self.nextSentenceLabels = nextSentenceLabels
        self.batchSize = batchSize
        self.sequenceLength = sequenceLength
        self.maskedLMLossWeight = maskedLMLossWeight
        self.nextSentenceLossWeight = nextSentenceLossWeight
        self.dropout = dropout
    }

    public var sampleCount: Int { batchSize }
    public var sampleLength: Int { sequenceLength }

    /// Positions predicted by the masked-LM head.
    public var predictedCount: Int { maskedLMLabels.reduce(0) { $0 + ($1 == Self.ignoreIndex ? 0 : 1) } }

    public func samples(_ range: Range<Int>) -> any MicroBatch { sequences(range) }

    /// Sequences `range`, keeping the step's loss weights, their dropout masks shifted with them.
    public func sequences(_ range: Range<Int>) -> PreTrainingBatch {
        let span = range.lowerBound * sequenceLength..<range.upperBound * sequenceLength
        var dropout = self.dropout
        dropout.firstSample += range.lowerBound
        return PreTrainingBatch(
            checkedTokens: Array(tokens[span]), tokenTypes: Array(tokenTypes[span]), attentionMask: Array(attentionMask[span]),
            maskedLMLabels: Array(maskedLMLabels[span]), nextSentenceLabels: Array(nextSentenceLabels[range]),
            batchSize: range.count, sequenceLength: sequenceLength, maskedLMLossWeight: maskedLMLossWeight,
            nextSentenceLossWeight: nextSentenceLossWeight, dropout: dropout)
    }

    /// Random byte pairs `[CLS] A [SEP] B [SEP]` of random lengths (so most samples are padded), 15%
    /// of their byte positions predicted, random next-sentence labels, weighted as one step whose
    /// dropout is that of step 0 of run `seed`: for checks and benchmarks that need no corpus.
    public static func random(batchSize: Int, sequenceLength: Int, seed: UInt64) -> PreTrainingBatch {
        precondition(batchSize >= 1 && sequenceLength >= 1, "a random pre-training batch needs a positive size")
        var generator = SeededGenerator(seed: seed ^ 0xBE27_BA7C)
        func below(_ bound: Int) -> Int { Int(generator.next() % UInt64(bound)) }
        let count = batchSize * sequenceLength
        var tokens = [Int32](repeating: BertVocabulary.pad, count: count)
        var tokenTypes = [Int32](repeating: 0, count: count)
        var attentionMask = [Int32](repeating: 0, count: count)
        var labels = [Int32](repeating: ignoreIndex, count: count)
        for b in 0..<batchSize {
            let row = b * sequenceLength
            let used = sequenceLength < 5 ? sequenceLength : sequenceLength / 2 + below(sequenceLength - sequenceLength / 2 + 1)
            let secondStart = used < 5 ? used : 2 + below(used - 4)  // first position of B, after [CLS] A [SEP]
            for t in 0..<used {
                attentionMask[row + t] = 1
                if t >= secondStart { tokenTypes[row + t] = 1 }
                if t == 0 {
                    tokens[row + t] = BertVocabulary.cls
                } else if t == secondStart - 1 || t == used - 1 {
                    tokens[row + t] = BertVocabulary.sep
                } else {
                    tokens[row + t] = Int32(below(BertVocabulary.byteCount))
                    if below(100) < 15 {
                        labels[row + t] = tokens[row + t]
                        tokens[row + t] = BertVocabulary.mask
                    }
                }
            }
        }
        let predicted = labels.reduce(0) { $0 + ($1 == ignoreIndex ? 0 : 1) }
        return PreTrainingBatch(
            checkedTokens: tokens, tokenTypes: tokenTypes, attentionMask: attentionMask, maskedLMLabels: labels,
            nextSentenceLabels: (0..<batchSize).map { _ in Int32(below(2)) }, batchSize: batchSize, sequenceLength: sequenceLength,
            maskedLMLossWeight: predicted == 0 ? 0 : 1 / Float(predicted), nextSentenceLossWeight: 1 / Float(batchSize),
            dropout: DropoutContext(seed: seed, step: 0, firstSample: 0))
    }
}
