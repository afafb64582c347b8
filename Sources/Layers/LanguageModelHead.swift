import Foundation
import Tensor

/// The end of a causal language model: final RMSNorm, `lm_head` projection to vocabulary logits
/// and softmax cross-entropy against the next tokens.
///
/// Not a `Layer`: forward ends in a number, `loss = Σ_tokens lossWeight · CE` (accumulated in
/// Double), and p1 starts from it. dlogits = lossWeight · (softmax − onehot) is known as soon as
/// the loss is, so forward writes it over the logits buffer and keeps that ([rows, vocabularySize]
/// either way); p1 is lm_head's p1 and the norm's p1, p2 theirs.
/// Parameter names are `norm.weight` and `lm_head.weight` (Hugging Face puts the norm under `model.`).
public final class LanguageModelHead {
    public let hiddenSize: Int
    public let vocabularySize: Int
    public let norm: RMSNorm
    public let lmHead: Linear
    public let parameters: [Parameter]
    /// dlogits [rows, vocabularySize], kept from forward for p1.
    private var saved = MicroBatchStore<Tensor>("LanguageModelHead forward state")

    /// `lmHeadWeight`, when given, is the [vocabularySize, hiddenSize] matrix lm_head shares with
    /// the token embedding (tied weights).
    public init(hiddenSize: Int, vocabularySize: Int, eps: Float = 1e-5, lmHeadWeight: Parameter? = nil) {
        self.hiddenSize = hiddenSize
        self.vocabularySize = vocabularySize
        norm = RMSNorm(size: hiddenSize, eps: eps)
        lmHead = Linear(inputSize: hiddenSize, outputSize: vocabularySize, weight: lmHeadWeight)
        parameters = norm.parameters.map { $0.prefixed("norm") } + lmHead.parameters.map { $0.prefixed("lm_head") }
    }

    /// Σ lossWeight · CE over the rows of x [.., hiddenSize] against `targets` (one per row);
    /// saves dlogits under `microBatch`.
    public func forward(_ input: Tensor, targets: [Int32], lossWeight: Float, microBatch: Int) throws -> Double {
        try validate(targets: targets, rows: checkedRowCount(of: input, size: hiddenSize, layer: "LanguageModelHead"))
        let logits = try lmHead.forward(norm.forward(input, microBatch: microBatch), microBatch: microBatch)
        let loss = crossEntropy(logits: logits.pointer, targets: targets, vocabularySize: vocabularySize,
                                lossWeight: lossWeight, writeGradient: true)
        try saved.put(logits, for: microBatch)
        return loss
    }

    /// p1: dx [.., hiddenSize] of the loss.
    public func backwardInput(microBatch: Int) throws -> Tensor {
        let logitsGradient = try saved.take(microBatch)
        return try norm.backwardInput(lmHead.backwardInput(logitsGradient, microBatch: microBatch), microBatch: microBatch)
    }

    public func backwardWeight(_ work: WeightGradientWork) throws {
        try lmHead.backwardWeight(work)
        try norm.backwardWeight(work)
    }

    /// Logits [.., vocabularySize] of x [.., hiddenSize], saving nothing (for inference).
    public func logits(_ input: Tensor) throws -> Tensor {
        lmHead.apply(try norm.apply(input))
    }

    /// The forward loss alone, saving nothing (for evaluation).
    public func loss(_ input: Tensor, targets: [Int32], lossWeight: Float) throws -> Double {
        try validate(targets: targets, rows: checkedRowCount(of: input, size: hiddenSize, layer: "LanguageModelHead"))
        let logits = try logits(input)
        return crossEntropy(logits: logits.pointer, targets: targets, vocabularySize: vocabularySize,
                            lossWeight: lossWeight, writeGradient: false)
    }

    /// Throws unless there is one target per row and every target is a vocabulary id.
    public func validate(targets: [Int32], rows: Int) throws {
        guard targets.count == rows else {
            throw TwoBPError("LanguageModelHead: \(targets.count) targets for \(rows) positions")
        }
        if let bad = targets.first(where: { $0 < 0 || Int($0) >= vocabularySize }) {
            throw TwoBPError("LanguageModelHead: target id \(bad) is outside the vocabulary of \(vocabularySize)")
        }
    }
}

/// Σ_rows lossWeight · (logsumexp(logits_r) − logits_r[target_r]), in Double. With `writeGradient`,
/// each row of `logits` [targets.count, vocabularySize] becomes lossWeight · (softmax − onehot(target)).
/// Rows run in parallel; their losses are summed in row order afterwards, whatever the thread count.
func crossEntropy(logits: UnsafeMutablePointer<Float>, targets: [Int32], vocabularySize: Int,
                  lossWeight: Float, writeGradient: Bool) -> Double {
    var rowLosses = [Double](repeating: 0, count: targets.count)
    rowLosses.withUnsafeMutableBufferPointer { rowLosses in
        targets.withUnsafeBufferPointer { targets in
            Parallel.forEachPart(of: targets.count, minimumPerPart: minimumRowsPerPart) { rows in
                for row in rows {
                    let (z, target) = (logits + row * vocabularySize, Int(targets[row]))
                    var maximum = -Float.infinity
                    for j in 0..<vocabularySize { maximum = Swift.max(maximum, z[j]) }
                    var sum: Double = 0
                    for j in 0..<vocabularySize { sum += Double(Foundation.exp(z[j] - maximum)) }
                    let logNormaliser = Double(maximum) + Foundation.log(sum)
                    rowLosses[row] = Double(lossWeight) * (logNormaliser - Double(z[target]))
                    if writeGradient {
                        let scale = Float(1 / sum)
                        for j in 0..<vocabularySize { z[j] = lossWeight * (Foundation.exp(z[j] - maximum) * scale) }
                        z[target] -= lossWeight
                    }
                }
            }
        }
    }
    return rowLosses.reduce(0, +)
}
