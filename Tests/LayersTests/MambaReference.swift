import Foundation

// Independent Double references of the Mamba layers, written the naive way straight from Hugging Face's
// MambaMixer.slow_forward (without cache or attention mask), MambaRMSNorm and MambaBlock, sharing no code with
// the Float layers. Tensors are flat row-major arrays; rows are (sequence, step), sequence-major, as the
// [batch, seq_len, ...] tensors of the Python code before its transposes.

/// Sizes and options of a Mamba mixer or block, as the reference needs them.
struct MambaReferenceShape {
    var batch: Int
    var length: Int
    var hidden: Int
    var intermediate: Int
    var states: Int
    var kernel: Int
    var rank: Int
    var useBias: Bool
    var useConvBias: Bool
    var eps = 1e-5
    var rows: Int { batch * length }
}

extension Reference {
    /// torch.nn.functional.softplus (beta 1, threshold 20).
    static func softplus(_ v: Double) -> Double { v > 20 ? v : log1p(exp(v)) }

    static func silu(_ v: Double) -> Double { v / (1 + exp(-v)) }

    /// self.conv1d(hidden_states)[..., :seq_len] for nn.Conv1d(E, E, K, groups: E, padding: K − 1), on x
    /// [batch, length, channels]; `weight` is the [channels, 1, K] tensor flattened.
    static func causalDepthwiseConv(_ x: [Double], weight: [Double], bias: [Double]?, batch: Int, length: Int,
                                    channels: Int, kernel: Int) -> [Double] {
        var y = [Double](repeating: 0, count: x.count)
        for b in 0..<batch {
            for c in 0..<channels {
                // Conv1d pads K − 1 zeros on both sides of time and correlates: out[t] = Σ_k w[k] · padded[t + k].
                var padded = [Double](repeating: 0, count: length + 2 * (kernel - 1))
                for t in 0..<length { padded[t + kernel - 1] = x[(b * length + t) * channels + c] }
                for t in 0..<length {
                    var sum = bias?[c] ?? 0
                    for k in 0..<kernel { sum += weight[c * kernel + k] * padded[t + k] }
                    y[(b * length + t) * channels + c] = sum
                }
            }
        }
        return y
    }

    /// Step 3 of slow_forward and its gate: discretisation, the recurrence, + x · D, · act(gate). x, timeStep
    /// (dt_proj's output before softplus) and z are [rows, channels], b and c [rows, states], aLog
    /// [channels, states], d [channels].
    static func selectiveScan(x: [Double], timeStep: [Double], b: [Double], c: [Double], z: [Double], aLog: [Double], d: [Double],
                              batch: Int, length: Int, channels: Int, states: Int) -> [Double] {
        let a = aLog.map { -exp($0) }
        var output = [Double](repeating: 0, count: batch * length * channels)
        for sequence in 0..<batch {
            var ssmState = [Double](repeating: 0, count: channels * states)
            for t in 0..<length {
                let row = sequence * length + t
                for e in 0..<channels {
                    let discreteTimeStep = softplus(timeStep[row * channels + e])
                    var scanOutput = 0.0
                    for n in 0..<states {
                        let discreteA = exp(a[e * states + n] * discreteTimeStep)
                        let deltaBU = discreteTimeStep * b[row * states + n] * x[row * channels + e]
                        ssmState[e * states + n] = discreteA * ssmState[e * states + n] + deltaBU
                        scanOutput += ssmState[e * states + n] * c[row * states + n]
                    }
                    scanOutput += x[row * channels + e] * d[e]
                    output[row * channels + e] = scanOutput * silu(z[row * channels + e])
                }
            }
        }
        return output
    }

    /// y [rows, outputSize] = x wᵀ (+ bias).
    static func linear(_ x: [Double], _ w: [Double], bias: [Double]?, inputSize: Int, outputSize: Int) -> [Double] {
        let y = linear(x, w, inputSize: inputSize, outputSize: outputSize)
        guard let bias else { return y }
        return y.indices.map { y[$0] + bias[$0 % outputSize] }
    }

    /// MambaMixer.slow_forward on u [batch, length, hidden]; weights named as its state dict.
    static func mambaMixer(_ u: [Double], _ s: MambaReferenceShape, _ w: Weights) -> [Double] {
        let (e, n, r) = (s.intermediate, s.states, s.rank)
        let projected = linear(u, w["in_proj.weight"], bias: s.useBias ? w["in_proj.bias"] : nil, inputSize: s.hidden, outputSize: 2 * e)
        var hiddenStates = [Double](), gate = [Double]()
        for row in 0..<s.rows {
            hiddenStates += projected[row * 2 * e..<row * 2 * e + e]
            gate += projected[row * 2 * e + e..<(row + 1) * 2 * e]
        }
        hiddenStates = causalDepthwiseConv(hiddenStates, weight: w["conv1d.weight"], bias: s.useConvBias ? w["conv1d.bias"] : nil,
                                           batch: s.batch, length: s.length, channels: e, kernel: s.kernel).map(silu)
        let ssmParameters = linear(hiddenStates, w["x_proj.weight"], inputSize: e, outputSize: r + 2 * n)
        var timeStep = [Double](), b = [Double](), c = [Double]()
        for row in 0..<s.rows {
            let start = row * (r + 2 * n)
            timeStep += ssmParameters[start..<start + r]
            b += ssmParameters[start + r..<start + r + n]
            c += ssmParameters[start + r + n..<start + r + 2 * n]
        }
        let discreteTimeStep = linear(timeStep, w["dt_proj.weight"], bias: w["dt_proj.bias"], inputSize: r, outputSize: e)
        let scanOutput = selectiveScan(x: hiddenStates, timeStep: discreteTimeStep, b: b, c: c, z: gate, aLog: w["A_log"], d: w["D"],
                                       batch: s.batch, length: s.length, channels: e, states: n)
        return linear(scanOutput, w["out_proj.weight"], bias: s.useBias ? w["out_proj.bias"] : nil, inputSize: e, outputSize: s.hidden)
    }

    /// MambaBlock: x + mixer(norm(x)).
    static func mambaBlock(_ x: [Double], _ s: MambaReferenceShape, _ w: Weights) -> [Double] {
        let mixed = mambaMixer(rmsNorm(x, w["norm.weight"], eps: s.eps), s, w.scoped("mixer"))
        return zip(x, mixed).map(+)
    }
}
