import Foundation
import Layers
import Tensor
@testable import Training
import XCTest
@testable import Checkpoints

final class SGDTests: XCTestCase {
    /// A matrix (decayed) and a vector (not decayed) with fixed starting values.
    func makeParameters() -> [Parameter] {
        let weight = Parameter(name: "conv.weight", shape: [2, 3])
        let gain = Parameter(name: "bn.weight", shape: [3], decays: false)
        for (i, v) in [0.5, -1.0, 2.0, 0.25, -0.75, 1.5].enumerated() { weight.value[i] = Float(v) }
        for (i, v) in [1.0, 1.0, 0.5].enumerated() { gain.value[i] = Float(v) }
        return [weight, gain]
    }

    func setGradients(_ parameters: [Parameter], step: Int) {
        for (p, parameter) in parameters.enumerated() {
            for i in 0..<parameter.gradient.count { parameter.gradient[i] = Float(((p * 7 + i * 3 + step * 5) % 11) - 5) / 8 }
        }
    }

    /// Four steps against a Double transcription of torch.optim.SGD's `_single_tensor_sgd` (dampening 0,
    /// not Nesterov): d_p = g + λ·p; buf = d_p at the first step, else μ·buf + d_p; p −= lr·buf, with λ
    /// only on the decayed matrix, and the gradients scaled by a clipping factor on the last step.
    func testMatchesTorchSGDTranscription() throws {
        let parameters = makeParameters()
        let configuration = SGD.Configuration(momentum: 0.9, weightDecay: 0.01, maxGradientNorm: 1)
        let optimizer = try SGD(parameters: parameters, configuration: configuration)
        var values = parameters.map { $0.value.toArray().map(Double.init) }
        var buffers: [[Double]] = values.map { _ in [] }
        let rates = [0.1, 0.05, 0.05, 0.02]
        for (t, rate) in rates.enumerated() {
            setGradients(parameters, step: t)
            let norm = t == 3 ? 4.0 : nil  // the last step is clipped to 1 / (4 + 1e-6)
            let scale = try optimizer.update(learningRate: Float(rate), globalGradientNorm: norm)
            XCTAssertEqual(Double(scale), t == 3 ? 1 / (4 + 1e-6) : 1, accuracy: 1e-7)
            for (p, parameter) in parameters.enumerated() {
                let decay = parameter.decays ? 0.01 : 0
                let d = zip(parameter.gradient.toArray(), values[p]).map { Double($0) * Double(scale) + decay * $1 }
                buffers[p] = t == 0 ? d : zip(buffers[p], d).map { 0.9 * $0 + $1 }
                values[p] = zip(values[p], buffers[p]).map { $0 - rate * $1 }
            }
        }
        XCTAssertEqual(optimizer.step, 4)
        for (p, parameter) in parameters.enumerated() {
            for (actual, expected) in zip(parameter.value.toArray(), values[p]) { XCTAssertEqual(Double(actual), expected, accuracy: 1e-6) }
        }
        XCTAssertEqual(parameters[0].gradient[0], Float(((0 + 0 + 15) % 11) - 5) / 8, "the optimizer does not zero gradients")
    }

    func testStateSavesAndResumesBitForBitAndRefusesAdamWState() throws {
        let original = makeParameters()
        let a = try SGD(parameters: original)
        for t in 0..<2 {
            setGradients(original, step: t)
            try a.update(learningRate: 0.1)
        }
        XCTAssertEqual(a.stateTensors().map(\.name), ["b.conv.weight", "b.bn.weight"])
        let saved = try SafeTensorsFile(bytes: Data(SafeTensors.encode(a.stateTensors(), metadata: a.stateMetadata)), source: "state")
        XCTAssertEqual(saved.metadata["optimizer"], "sgd")
        let copy = makeParameters()
        for (c, o) in zip(copy, original) { c.value.pointer.update(from: o.value.pointer, count: o.value.count) }
        let b = try OptimizerConfiguration.sgd(.init()).make(parameters: copy)
        try b.loadState(from: SafeTensorsArchive(file: saved))
        XCTAssertEqual(b.step, 2)
        for optimizer in [a, b] as [Optimizer] {
            setGradients(optimizer.parameters, step: 2)
            try optimizer.update(learningRate: 0.1)
        }
        XCTAssertEqual(copy.map { $0.value.toArray() }, original.map { $0.value.toArray() })

        let adamw = try AdamW(parameters: makeParameters())
        assertTwoBPError("saved by sgd, but this run uses adamw") { try adamw.loadState(from: SafeTensorsArchive(file: saved)) }
        let adamState = try SafeTensorsFile(bytes: Data(SafeTensors.encode(adamw.stateTensors(), metadata: adamw.stateMetadata)), source: "adam")
        assertTwoBPError("saved by adamw, but this run uses sgd") { try b.loadState(from: SafeTensorsArchive(file: adamState)) }
        assertTwoBPError("momentum must be in [0, 1)") { try SGD(parameters: makeParameters(), configuration: .init(momentum: 1)) }
        assertTwoBPError("'conv.weight' appears twice") { try SGD(parameters: [original[0], original[0]]) }
    }
}
