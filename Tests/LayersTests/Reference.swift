import Foundation

// Independent Double references of the layers' forwards, written the naive way straight from the
// Hugging Face definitions (LlamaRMSNorm, LlamaRotaryEmbedding + apply_rotary_pos_emb,
// LlamaAttention, LlamaMLP, LlamaDecoderLayer, CrossEntropyLoss) and sharing no code with the
// Float layers. Gradient checks differentiate these by central differences.
//
// This file is also linked into ModelsTests (Tests/ModelsTests/Reference.swift is a symlink), which
// composes the whole model from these pieces.

/// Named Double tensors (a model's or layer's parameters, plus "input" where it is a variable);
/// `scoped` narrows to the names under a prefix, as a module does in PyTorch.
struct Weights {
    let values: [String: [Double]]
    var prefix = ""

    subscript(_ name: String) -> [Double] {
        guard let value = values[prefix + name] else { fatalError("reference: no tensor named \(prefix + name)") }
        return value
    }

    func scoped(_ name: String) -> Weights {
        Weights(values: values, prefix: prefix + name + ".")
    }
}

/// Sizes of a LLaMa-style model or layer, as the reference needs them.
struct ReferenceShape {
    var batch: Int
    var length: Int
    var hidden: Int
    var heads: Int
    var keyValueHeads: Int
    var intermediate = 0
    var vocabulary = 0
    var theta = 10000.0
    var eps = 1e-5
    var headSize: Int { hidden / heads }
    var rows: Int { batch * length }
}

enum Reference {
    /// y [rows, outputSize] = x [rows, inputSize] · wᵀ, w [outputSize, inputSize].
    static func linear(_ x: [Double], _ w: [Double], inputSize: Int, outputSize: Int) -> [Double] {
        let rows = x.count / inputSize
        var y = [Double](repeating: 0, count: rows * outputSize)
        // Raw pointers: their subscripts are transparent, so even a debug build runs this loop at speed.
        x.withUnsafeBufferPointer { x in
            w.withUnsafeBufferPointer { w in
                y.withUnsafeMutableBufferPointer { y in
                    let (x, w, y) = (x.baseAddress!, w.baseAddress!, y.baseAddress!)
                    for r in 0..<rows {
                        for o in 0..<outputSize {
                            var sum = 0.0
                            for i in 0..<inputSize { sum += x[r * inputSize + i] * w[o * inputSize + i] }
                            y[r * outputSize + o] = sum
                        }
                    }
                }
            }
        }
        return y
    }

    /// weight ⊙ x / sqrt(mean(x²) + eps), per row of weight.count values.
    static func rmsNorm(_ x: [Double], _ weight: [Double], eps: Double) -> [Double] {
        let size = weight.count
        var y = x
        for r in 0..<(x.count / size) {
            var meanSquare = 0.0
            for i in 0..<size { meanSquare += x[r * size + i] * x[r * size + i] }
            meanSquare /= Double(size)
            for i in 0..<size { y[r * size + i] = weight[i] * x[r * size + i] / (meanSquare + eps).squareRoot() }
        }
        return y
    }

    /// apply_rotary_pos_emb on x [batch, length, heads · headSize]: x · cos + rotate_half(x) · sin with
    /// rotate_half(x) = cat(−x₂, x₁), cos/sin of t · θ^(−2i/d) repeated over both halves.
    static func rope(_ x: [Double], batch: Int, length: Int, heads: Int, headSize: Int, theta: Double) -> [Double] {
        let half = headSize / 2
        var y = x
        for b in 0..<batch {
            for t in 0..<length {
                for h in 0..<heads {
                    let base = ((b * length + t) * heads + h) * headSize
                    for i in 0..<headSize {
                        let angle = Double(t) / pow(theta, Double(2 * (i % half)) / Double(headSize))
                        let rotated = i < half ? -x[base + i + half] : x[base + i - half]
                        y[base + i] = x[base + i] * cos(angle) + rotated * sin(angle)
                    }
                }
            }
        }
        return y
    }

    /// LlamaAttention (no bias) on x [batch, length, hidden]; weights `q_proj.weight` ... `o_proj.weight`.
    static func attention(_ x: [Double], _ s: ReferenceShape, _ w: Weights) -> [Double] {
        let (d, kvWidth) = (s.headSize, s.keyValueHeads * s.headSize)
        let q = rope(linear(x, w["q_proj.weight"], inputSize: s.hidden, outputSize: s.hidden),
                     batch: s.batch, length: s.length, heads: s.heads, headSize: d, theta: s.theta)
        let k = rope(linear(x, w["k_proj.weight"], inputSize: s.hidden, outputSize: kvWidth),
                     batch: s.batch, length: s.length, heads: s.keyValueHeads, headSize: d, theta: s.theta)
        let v = linear(x, w["v_proj.weight"], inputSize: s.hidden, outputSize: kvWidth)
        var y = [Double](repeating: 0, count: s.rows * s.hidden)
        for b in 0..<s.batch {
            for h in 0..<s.heads {
                let g = h / (s.heads / s.keyValueHeads)
                for t in 0..<s.length {
                    var scores = [Double](repeating: 0, count: t + 1)
                    for j in 0...t {
                        for i in 0..<d {
                            scores[j] += q[(b * s.length + t) * s.hidden + h * d + i] * k[(b * s.length + j) * kvWidth + g * d + i]
                        }
                        scores[j] /= Double(d).squareRoot()
                    }
                    let maximum = scores.max()!
                    let exps = scores.map { exp($0 - maximum) }
                    let total = exps.reduce(0, +)
                    for j in 0...t {
                        for i in 0..<d {
                            y[(b * s.length + t) * s.hidden + h * d + i] += exps[j] / total * v[(b * s.length + j) * kvWidth + g * d + i]
                        }
                    }
                }
            }
        }
        return linear(y, w["o_proj.weight"], inputSize: s.hidden, outputSize: s.hidden)
    }

    /// LlamaMLP: down(silu(gate(x)) · up(x)).
    static func mlp(_ x: [Double], _ s: ReferenceShape, _ w: Weights) -> [Double] {
        let gate = linear(x, w["gate_proj.weight"], inputSize: s.hidden, outputSize: s.intermediate)
        let up = linear(x, w["up_proj.weight"], inputSize: s.hidden, outputSize: s.intermediate)
        let hidden = zip(gate, up).map { a, u in a / (1 + exp(-a)) * u }
        return linear(hidden, w["down_proj.weight"], inputSize: s.intermediate, outputSize: s.hidden)
    }

    /// LlamaDecoderLayer: h = x + attn(norm₁(x)); h + mlp(norm₂(h)).
    static func block(_ x: [Double], _ s: ReferenceShape, _ w: Weights) -> [Double] {
        let attended = attention(rmsNorm(x, w["input_layernorm.weight"], eps: s.eps), s, w.scoped("self_attn"))
        let h = zip(x, attended).map(+)
        let mixed = mlp(rmsNorm(h, w["post_attention_layernorm.weight"], eps: s.eps), s, w.scoped("mlp"))
        return zip(h, mixed).map(+)
    }

    /// Rows `tokens` of w [vocabulary, size].
    static func embedding(_ tokens: [Int32], _ w: [Double], size: Int) -> [Double] {
        tokens.flatMap { w[Int($0) * size..<(Int($0) + 1) * size] }
    }

    /// Σ lossWeight · cross-entropy(lm_head(norm(x)), targets); weights `norm.weight`, `lm_head.weight`.
    static func headLoss(_ x: [Double], targets: [Int32], lossWeight: Double, _ s: ReferenceShape, _ w: Weights) -> Double {
        let logits = linear(rmsNorm(x, w["norm.weight"], eps: s.eps), w["lm_head.weight"], inputSize: s.hidden, outputSize: s.vocabulary)
        var loss = 0.0
        for (r, target) in targets.enumerated() {
            let row = logits[r * s.vocabulary..<(r + 1) * s.vocabulary]
            let maximum = row.max()!
            let logSumExp = maximum + log(row.reduce(0) { $0 + exp($1 - maximum) })
            loss += lossWeight * (logSumExp - row[row.startIndex + Int(target)])
        }
        return loss
    }
}
