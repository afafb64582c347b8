import Foundation

// Independent Double references of the BERT layers, written the naive way from the Hugging Face
// definitions (nn.LayerNorm, "gelu", BertEmbeddings, BertSelfAttention's eager path with
// get_extended_attention_mask, BertSelfOutput, BertIntermediate, BertOutput, BertLayer, BertPooler,
// BertPredictionHeadTransform, BertLMPredictionHead, BertOnlyNSPHead, CrossEntropyLoss with
// ignore_index = -100). They share no code with the Float layers; dropout masks come in as data
// (0 or 1 / (1 − p) per element), as a training forward in PyTorch would draw them.

/// Sizes of a BERT layer or head, as the reference needs them.
struct BertShape {
    var batch: Int
    var length: Int
    var hidden: Int
    var heads = 1
    var intermediate = 0
    var vocabulary = 0
    var eps = 1e-12
    var headSize: Int { hidden / heads }
    var rows: Int { batch * length }
}

/// Per-element dropout multipliers of one BertLayer forward (nil: no dropout there).
struct BertLayerDropouts {
    /// [batch, heads, length, length], on the attention probabilities.
    var probabilities: [Double]?
    /// [batch, length, hidden], after attention.output.dense.
    var attentionOutput: [Double]?
    /// [batch, length, hidden], after output.dense.
    var output: [Double]?
}

enum BertReference {
    /// torch.finfo(torch.float32).min, what HF adds to the scores of padded keys.
    static let maskedScore = -3.4028234663852886e38

    /// x Wᵀ + b with `weight` [out, in] and `bias` [out] under `w`.
    static func dense(_ x: [Double], _ w: Weights, inputSize: Int, outputSize: Int) -> [Double] {
        let y = Reference.linear(x, w["weight"], inputSize: inputSize, outputSize: outputSize)
        let bias = w["bias"]
        return y.indices.map { y[$0] + bias[$0 % outputSize] }
    }

    /// nn.LayerNorm over rows of `weight.count`: (x − mean) / sqrt(biased var + eps) · weight + bias.
    static func layerNorm(_ x: [Double], _ w: Weights, eps: Double) -> [Double] {
        let (weight, bias) = (w["weight"], w["bias"])
        let size = weight.count
        var y = x
        for r in 0..<(x.count / size) {
            let row = x[r * size..<(r + 1) * size]
            let mean = row.reduce(0, +) / Double(size)
            let variance = row.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(size)
            for i in 0..<size { y[r * size + i] = (x[r * size + i] - mean) / (variance + eps).squareRoot() * weight[i] + bias[i] }
        }
        return y
    }

    /// 0.5 · x · (1 + erf(x / √2)).
    static func gelu(_ x: [Double]) -> [Double] {
        x.map { 0.5 * $0 * (1 + erf($0 / 2.0.squareRoot())) }
    }

    /// BertSelfAttention + BertSelfOutput.dense on x [batch, length, hidden]; `mask` [batch, length]
    /// of 1/0; weights `self.query.*`, `self.key.*`, `self.value.*`, `output.dense.*`.
    static func attention(_ x: [Double], _ s: BertShape, _ w: Weights, mask: [Int32], probabilityDropout: [Double]?) -> [Double] {
        let (d, hidden, length) = (s.headSize, s.hidden, s.length)
        let q = dense(x, w.scoped("self.query"), inputSize: hidden, outputSize: hidden)
        let k = dense(x, w.scoped("self.key"), inputSize: hidden, outputSize: hidden)
        let v = dense(x, w.scoped("self.value"), inputSize: hidden, outputSize: hidden)
        var context = [Double](repeating: 0, count: s.rows * hidden)
        for b in 0..<s.batch {
            for h in 0..<s.heads {
                for i in 0..<length {
                    var scores = [Double](repeating: 0, count: length)
                    for j in 0..<length {
                        var dot = 0.0
                        for c in 0..<d { dot += q[(b * length + i) * hidden + h * d + c] * k[(b * length + j) * hidden + h * d + c] }
                        scores[j] = dot / Double(d).squareRoot() + (1 - Double(mask[b * length + j])) * maskedScore
                    }
                    let maximum = scores.max()!
                    let exps = scores.map { exp($0 - maximum) }
                    let total = exps.reduce(0, +)
                    for j in 0..<length {
                        var probability = exps[j] / total
                        if let probabilityDropout { probability *= probabilityDropout[((b * s.heads + h) * length + i) * length + j] }
                        for c in 0..<d { context[(b * length + i) * hidden + h * d + c] += probability * v[(b * length + j) * hidden + h * d + c] }
                    }
                }
            }
        }
        return dense(context, w.scoped("output.dense"), inputSize: hidden, outputSize: hidden)
    }

    /// BertLayer: h = LN(x + drop(attention(x))), LN(h + drop(output.dense(gelu(intermediate.dense(h))))).
    static func layer(_ x: [Double], _ s: BertShape, _ w: Weights, mask: [Int32], dropouts: BertLayerDropouts) -> [Double] {
        let attended = multiplied(attention(x, s, w.scoped("attention"), mask: mask, probabilityDropout: dropouts.probabilities),
                                  by: dropouts.attentionOutput)
        let h = layerNorm(zip(x, attended).map(+), w.scoped("attention.output.LayerNorm"), eps: s.eps)
        let intermediate = gelu(dense(h, w.scoped("intermediate.dense"), inputSize: s.hidden, outputSize: s.intermediate))
        let output = multiplied(dense(intermediate, w.scoped("output.dense"), inputSize: s.intermediate, outputSize: s.hidden),
                                by: dropouts.output)
        return layerNorm(zip(h, output).map(+), w.scoped("output.LayerNorm"), eps: s.eps)
    }

    /// BertEmbeddings: drop(LN(word[token] + token_type[type] + position[t])).
    static func embeddings(tokens: [Int32], tokenTypes: [Int32], _ s: BertShape, _ w: Weights, dropout: [Double]?) -> [Double] {
        let (word, position, type) = (w["word_embeddings.weight"], w["position_embeddings.weight"], w["token_type_embeddings.weight"])
        var sum = [Double](repeating: 0, count: s.rows * s.hidden)
        for r in 0..<s.rows {
            for c in 0..<s.hidden {
                sum[r * s.hidden + c] = word[Int(tokens[r]) * s.hidden + c] + type[Int(tokenTypes[r]) * s.hidden + c]
                    + position[(r % s.length) * s.hidden + c]
            }
        }
        return multiplied(layerNorm(sum, w.scoped("LayerNorm"), eps: s.eps), by: dropout)
    }

    /// Σ lossWeight · CE of BertLMPredictionHead's logits over every position whose target is not
    /// -100 (the transform and decoder run on all rows, as in HF); weights `transform.dense.*`,
    /// `transform.LayerNorm.*`, `decoder.weight`, `bias`.
    static func maskedLMLoss(_ x: [Double], targets: [Int32], lossWeight: Double, _ s: BertShape, _ w: Weights) -> Double {
        let transformed = layerNorm(gelu(dense(x, w.scoped("transform.dense"), inputSize: s.hidden, outputSize: s.hidden)),
                                    w.scoped("transform.LayerNorm"), eps: s.eps)
        let logits = Reference.linear(transformed, w["decoder.weight"], inputSize: s.hidden, outputSize: s.vocabulary)
        let bias = w["bias"]
        return crossEntropy(logits.indices.map { logits[$0] + bias[$0 % s.vocabulary] }, targets: targets, classes: s.vocabulary,
                            lossWeight: lossWeight)
    }

    /// Σ lossWeight · CE of seq_relationship(tanh(pooler.dense(x[:, 0]))) against `labels` [batch].
    static func nextSentenceLoss(_ x: [Double], labels: [Int32], lossWeight: Double, _ s: BertShape, _ w: Weights) -> Double {
        let first = (0..<s.batch).flatMap { b in x[(b * s.length) * s.hidden..<(b * s.length + 1) * s.hidden] }
        let pooled = dense(first, w.scoped("pooler.dense"), inputSize: s.hidden, outputSize: s.hidden).map { tanh($0) }
        let logits = dense(pooled, w.scoped("seq_relationship"), inputSize: s.hidden, outputSize: 2)
        return crossEntropy(logits, targets: labels, classes: 2, lossWeight: lossWeight)
    }

    /// Σ over rows whose target is not -100 of lossWeight · (logsumexp(row) − row[target]).
    static func crossEntropy(_ logits: [Double], targets: [Int32], classes: Int, lossWeight: Double) -> Double {
        var loss = 0.0
        for (r, target) in targets.enumerated() where target != -100 {
            let row = logits[r * classes..<(r + 1) * classes]
            let maximum = row.max()!
            loss += lossWeight * (maximum + log(row.reduce(0) { $0 + exp($1 - maximum) }) - row[row.startIndex + Int(target)])
        }
        return loss
    }

    static func multiplied(_ x: [Double], by factors: [Double]?) -> [Double] {
        guard let factors else { return x }
        return zip(x, factors).map(*)
    }
}
