import Foundation
import Layers
import Tensor
@testable import Training
import XCTest
@testable import Checkpoints

final class AdamWTests: XCTestCase {
    /// A matrix (decayed) and a vector (not decayed) with fixed starting values.
    func makeParameters() -> [Parameter] {
        let weight = Parameter(name: "layer.weight", shape: [2, 3])
        let gain = Parameter(name: "norm.weight", shape: [3])
        for (i, v) in [0.5, -1.0, 2.0, 0.25, -0.75, 1.5].enumerated() { weight.value[i] = Float(v) }
        for (i, v) in [1.0, 1.0, 0.5].enumerated() { gain.value[i] = Float(v) }
        return [weight, gain]
    }

    /// Deterministic gradients for step `t`, exactly representable in Float.
    func gradient(parameter: Int, index: Int, step: Int) -> Float {
        Float(((parameter * 7 + index * 3 + step * 5) % 11) - 5) / 8
    }

    func setGradients(_ parameters: [Parameter], step: Int) {
        for (p, parameter) in parameters.enumerated() {
            for i in 0..<parameter.gradient.count { parameter.gradient[i] = gradient(parameter: p, index: i, step: step) }
        }
    }

    func testFirstStepByHand() throws {
        let p = Parameter(name: "w", shape: [1, 1])
        p.value[0] = 1
        p.gradient[0] = 0.5
        let optimizer = try AdamW(parameters: [p], configuration: .init(maxGradientNorm: nil))
        try optimizer.update(learningRate: 0.1)
        // Bias-corrected first step: m̂ = g, v̂ = g², so the step is lr · g / (|g| + ε) ≈ lr;
        // decay multiplies by 1 − lr·λ = 0.99 first: 0.99 − 0.1 = 0.89.
        XCTAssertEqual(p.value[0], 0.89, accuracy: 1e-6)
        XCTAssertEqual(optimizer.firstMoments[0], 0.05, accuracy: 1e-7)
        XCTAssertEqual(optimizer.secondMoments[0], 0.0125, accuracy: 1e-8)
        XCTAssertEqual(p.gradient[0], 0.5, "the optimizer does not zero gradients")
    }

    func testMatchesDoubleReferenceWithDecayOnlyOnMatricesAndClipping() throws {
        let parameters = makeParameters()
        let optimizer = try AdamW(parameters: parameters, configuration: .init(maxGradientNorm: 1.0))
        XCTAssertEqual(optimizer.offsets, [0, 6])
        // Reference, in Double, PyTorch's formulation.
        var p = parameters.map { $0.value.toArray().map(Double.init) }
        var m = p.map { [Double](repeating: 0, count: $0.count) }
        var v = m
        let (beta1, beta2, eps, decay) = (0.9, 0.95, 1e-8, 0.1)
        let rates = [1e-2, 3e-3, 5e-2, 1e-3]
        let norms: [Double?] = [nil, 0.5, 4.0, 2.0]  // clipping applies when the norm exceeds 1
        for (t, lr) in rates.enumerated() {
            setGradients(parameters, step: t)
            let scale = try optimizer.update(learningRate: Float(lr), globalGradientNorm: norms[t])
            let expectedScale = norms[t].map { min(1, 1 / ($0 + 1e-6)) } ?? 1
            XCTAssertEqual(Double(scale), expectedScale, accuracy: 1e-7)
            let step = Double(t + 1)
            for k in 0..<p.count {
                let lambda = k == 0 ? decay : 0
                for i in 0..<p[k].count {
                    let g = Double(gradient(parameter: k, index: i, step: t)) * expectedScale
                    p[k][i] *= 1 - lr * lambda
                    m[k][i] = beta1 * m[k][i] + (1 - beta1) * g
                    v[k][i] = beta2 * v[k][i] + (1 - beta2) * g * g
                    let mHat = m[k][i] / (1 - pow(beta1, step)), vHat = v[k][i] / (1 - pow(beta2, step))
                    p[k][i] -= lr * mHat / (vHat.squareRoot() + eps)
                }
            }
            for (k, parameter) in parameters.enumerated() {
                for i in 0..<parameter.value.count {
                    XCTAssertEqual(Double(parameter.value[i]), p[k][i], accuracy: 1e-6 + 1e-6 * abs(p[k][i]), "step \(t + 1) parameter \(k)[\(i)]")
                    XCTAssertEqual(Double(optimizer.firstMoments[optimizer.offsets[k] + i]), m[k][i], accuracy: 1e-6)
                    XCTAssertEqual(Double(optimizer.secondMoments[optimizer.offsets[k] + i]), v[k][i], accuracy: 1e-6)
                }
            }
        }
        XCTAssertEqual(optimizer.step, 4)
        // The vector with no decay and zero gradient stays put; the matrix shrinks.
        let w = Parameter(name: "w", shape: [1, 2]), b = Parameter(name: "b", shape: [2])
        for i in 0..<2 { w.value[i] = 1; b.value[i] = 1 }
        try AdamW(parameters: [w, b]).update(learningRate: 0.5)
        XCTAssertEqual(b.value.toArray(), [1, 1])
        XCTAssertEqual(w.value.toArray(), [0.95, 0.95])
    }

    func testSquaredGradientSumAndClippingScale() {
        let parameters = makeParameters()
        setGradients(parameters, step: 0)
        let expected = parameters.flatMap { $0.gradient.toArray() }.reduce(0.0) { $0 + Double($1) * Double($1) }
        XCTAssertEqual(GradientNorm.squaredSum(parameters), expected)
        XCTAssertEqual(GradientNorm.clippingScale(globalNorm: 0.5, maxNorm: 1), 1)
        XCTAssertEqual(GradientNorm.clippingScale(globalNorm: 4, maxNorm: 1), 0.25, accuracy: 1e-6)
    }

    func testNonFiniteNormThrowsAndLeavesStateAlone() throws {
        let parameters = makeParameters()
        let before = parameters.map { $0.value.toArray() }
        let optimizer = try AdamW(parameters: parameters)
        setGradients(parameters, step: 0)
        assertTwoBPError("gradient norm is nan at step 1") { try optimizer.update(learningRate: 0.1, globalGradientNorm: .nan) }
        XCTAssertEqual(parameters.map { $0.value.toArray() }, before)
        XCTAssertEqual(optimizer.step, 0)
    }

    func testRejectsDuplicateNamesAndBadHyperparameters() {
        let p = Parameter(name: "same", shape: [2])
        assertTwoBPError("'same' appears twice") { try AdamW(parameters: [p, Parameter(name: "same", shape: [1])]) }
        assertTwoBPError("betas") { try AdamW(parameters: [p], configuration: .init(beta1: 1)) }
        assertTwoBPError("gradient-norm limit") { try AdamW(parameters: [p], configuration: .init(maxGradientNorm: 0)) }
    }

    func testStateSaveAndLoadContinuesBitForBit() throws {
        let original = makeParameters()
        let a = try AdamW(parameters: original)
        for t in 0..<2 {
            setGradients(original, step: t)
            try a.update(learningRate: 0.01)
        }
        let names = a.stateTensors().map(\.name)
        XCTAssertEqual(names, ["m.layer.weight", "m.norm.weight", "v.layer.weight", "v.norm.weight"])
        let saved = try SafeTensorsFile(bytes: Data(SafeTensors.encode(a.stateTensors(), metadata: a.stateMetadata)), source: "state")
        XCTAssertEqual(saved.metadata["step"], "2")

        let copy = makeParameters()
        for (c, o) in zip(copy, original) { c.value.pointer.update(from: o.value.pointer, count: o.value.count) }
        let b = try AdamW(parameters: copy)
        try b.loadState(from: SafeTensorsArchive(file: saved))
        XCTAssertEqual(b.step, 2)
        for opt in [a, b] {
            setGradients(opt.parameters, step: 2)
            try opt.update(learningRate: 0.01)
        }
        XCTAssertEqual(copy.map { $0.value.toArray() }, original.map { $0.value.toArray() })
        XCTAssertEqual(b.secondMoments.toArray(), a.secondMoments.toArray())

        // A state file lacking a parameter's moments is refused before anything changes.
        let stranger = try AdamW(parameters: [Parameter(name: "other", shape: [2])])
        assertTwoBPError("missing tensor 'm.other'") { try stranger.loadState(from: SafeTensorsArchive(file: saved)) }
        let reshaped = try AdamW(parameters: [Parameter(name: "norm.weight", shape: [4])])
        assertTwoBPError("'m.norm.weight' has shape [3], expected [4]") { try reshaped.loadState(from: SafeTensorsArchive(file: saved)) }
        XCTAssertEqual(reshaped.step, 0)
        let noStep = try SafeTensorsFile(bytes: Data(SafeTensors.encode(a.stateTensors())), source: "no-step")
        assertTwoBPError("no valid \"step\"") { try b.loadState(from: SafeTensorsArchive(file: noStep)) }
    }
}

final class LearningRateScheduleTests: XCTestCase {
    func testWarmupThenCosineToMinimum() throws {
        let schedule = try LearningRateSchedule(maxLearningRate: 1e-3, warmupSteps: 10, totalSteps: 110, minRatio: 0.1)
        XCTAssertEqual(schedule.learningRate(at: 0), 1e-4, accuracy: 1e-15)
        XCTAssertEqual(schedule.learningRate(at: 4), 5e-4, accuracy: 1e-15)
        XCTAssertEqual(schedule.learningRate(at: 9), 1e-3, accuracy: 1e-15)
        XCTAssertEqual(schedule.learningRate(at: 10), 1e-3, accuracy: 1e-15)
        XCTAssertEqual(schedule.learningRate(at: 35), 1e-4 + 9e-4 * 0.5 * (1 + cos(Double.pi / 4)), accuracy: 1e-15)
        XCTAssertEqual(schedule.learningRate(at: 60), 5.5e-4, accuracy: 1e-15)
        XCTAssertGreaterThan(schedule.learningRate(at: 109), 1e-4)
        XCTAssertEqual(schedule.learningRate(at: 110), 1e-4, accuracy: 1e-15)
        XCTAssertEqual(schedule.learningRate(at: 5000), 1e-4, accuracy: 1e-15)
        let rates = (10...110).map(schedule.learningRate(at:))
        XCTAssertEqual(rates, rates.sorted(by: >), "monotone decay after warmup")

        let noWarmup = try LearningRateSchedule(maxLearningRate: 2, warmupSteps: 0, totalSteps: 4, minRatio: 0)
        XCTAssertEqual((0...4).map(noWarmup.learningRate(at:)), [2, 1 + cos(Double.pi / 4), 1, 1 + cos(3 * Double.pi / 4), 0].map { $0 }, accuracy: 1e-12)
    }

    func testRejectsBadParametersAlsoWhenDecoding() throws {
        assertTwoBPError("exceed total steps") { try LearningRateSchedule(maxLearningRate: 1, warmupSteps: 5, totalSteps: 4) }
        assertTwoBPError("ratio") { try LearningRateSchedule(maxLearningRate: 1, warmupSteps: 0, totalSteps: 4, minRatio: 1.5) }
        assertTwoBPError("non-negative") { try LearningRateSchedule(maxLearningRate: -1, warmupSteps: 0, totalSteps: 4) }
        let schedule = try LearningRateSchedule(maxLearningRate: 3e-4, warmupSteps: 2, totalSteps: 9, minRatio: 0.05)
        let data = try JSONEncoder().encode(schedule)
        XCTAssertEqual(try JSONDecoder().decode(LearningRateSchedule.self, from: data), schedule)
        let bad = #"{"max_learning_rate":1,"warmup_steps":9,"total_steps":4,"min_ratio":0}"#
        XCTAssertThrowsError(try JSONDecoder().decode(LearningRateSchedule.self, from: Data(bad.utf8)))
    }
}

private func XCTAssertEqual(_ a: [Double], _ b: [Double], accuracy: Double, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(a.count, b.count, file: file, line: line)
    for (x, y) in zip(a, b) { XCTAssertEqual(x, y, accuracy: accuracy, file: file, line: line) }
}
