import Foundation
import Layers
import Tensor
import XCTest

/// The Mamba family's layers on random shapes (drawn from `testSeed`): the selective scan, the causal depthwise
/// convolution, the mixer and the block, each forward against the independent Double reference of
/// `MambaReference.swift`, p1 and p2 against its central differences, and the split-backward contract; and the
/// Hugging Face initialisation.
final class MambaLayersTests: XCTestCase {
    // MARK: Selective scan

    /// The kernel alone, its operands laid out as the mixer has them (B and C columns of x_proj's output, z the
    /// second half of in_proj's), over lengths 1 ... 33 (most not multiples of 16), channels on either side of
    /// 16-lane tiles and state sizes not multiples of 16. Time steps reach both sides of softplus' threshold.
    func testSelectiveScanAgainstReferenceAndCentralDifferences() throws {
        var generator = makeGenerator(21)
        let shapes = [(batch: 1, length: 1, channels: 3, states: 5), (2, 7, 17, 4), (1, 33, 5, 17), (2, 19, 33, 16), (1, 2, 16, 1)]
        for (batch, length, channels, states) in shapes {
            let rows = batch * length
            let rank = generator.int(0...3)
            let context = "scan [\(batch), \(length)] \(channels) channels, \(states) states"
            var variables: [String: [Double]] = [
                "x": (0..<rows * channels).map { _ in generator.nextNormal() },
                // softplus of these: δ ≈ 1e-3, 0.13, 1 and 21 (above torch's threshold of 20).
                "timeStep": (0..<rows * channels).map { _ in [-7, -2, 0.5, 21][generator.int(0...3)] + 0.3 * generator.nextNormal() },
                "B": (0..<rows * states).map { _ in generator.nextNormal() },
                "C": (0..<rows * states).map { _ in generator.nextNormal() },
                "z": (0..<rows * channels).map { _ in 2 * generator.nextNormal() },
                // A = −(1 … N) and δ up to ~0.5 keep states alive over many steps; larger rates decay within a few.
                "A_log": (0..<channels * states).map { i in log(Double(i % states + 1)) + 0.3 * generator.nextNormal() },
                "D": (0..<channels).map { _ in 1 + 0.3 * generator.nextNormal() },
            ]
            // Snap to Float so the reference sees exactly the kernel's operands.
            variables = variables.mapValues { $0.map { Double(Float($0)) } }
            let reference = { (v: [String: [Double]]) in
                Reference.selectiveScan(x: v["x"]!, timeStep: v["timeStep"]!, b: v["B"]!, c: v["C"]!, z: v["z"]!, aLog: v["A_log"]!,
                                        d: v["D"]!, batch: batch, length: length, channels: channels, states: states)
            }
            let tensor = { (name: String, shape: [Int]) in Tensor(shape: shape, values: variables[name]!.map(Float.init)) }
            let (x, timeStep, aLog, d) = (tensor("x", [rows, channels]), tensor("timeStep", [rows, channels]),
                                          tensor("A_log", [channels, states]), tensor("D", [channels]))
            let selection = Tensor(zeros: [rows, rank + 2 * states])
            ColumnBlock(selection, offset: rank, width: states).assign(tensor("B", [rows, states]))
            ColumnBlock(selection, offset: rank + states, width: states).assign(tensor("C", [rows, states]))
            let projected = Tensor(zeros: [rows, 2 * channels])
            ColumnBlock(projected, offset: channels, width: channels).assign(tensor("z", [rows, channels]))
            let inputs = SelectiveScan.Inputs(
                x: ColumnBlock(x), timeStep: ColumnBlock(timeStep), b: ColumnBlock(selection, offset: rank, width: states),
                c: ColumnBlock(selection, offset: rank + states, width: states),
                gate: ColumnBlock(projected, offset: channels, width: channels), aLog: aLog, d: d, batch: batch, length: length)

            let output = Tensor(uninitialized: [rows, channels])
            SelectiveScan.forward(inputs, into: ColumnBlock(output))
            XCTAssertLessThan(relativeError(doubles(output), reference(variables)), forwardTolerance, "\(context): forward")

            // Gradients land in the same wide layouts; the columns outside each block must stay untouched.
            let sentinel: Float = 12345
            let selectionGradient = Tensor(shape: selection.shape, values: .init(repeating: sentinel, count: selection.count))
            let projectedGradient = Tensor(shape: projected.shape, values: .init(repeating: sentinel, count: projected.count))
            let (xGradient, timeStepGradient) = (Tensor(zeros: x.shape), Tensor(zeros: x.shape))
            let (aLogGradient, dGradient) = (Tensor(zeros: aLog.shape), Tensor(zeros: d.shape))
            let gradients = SelectiveScan.Gradients(
                x: ColumnBlock(xGradient), timeStep: ColumnBlock(timeStepGradient), b: ColumnBlock(selectionGradient, offset: rank, width: states),
                c: ColumnBlock(selectionGradient, offset: rank + states, width: states),
                gate: ColumnBlock(projectedGradient, offset: channels, width: channels), aLog: aLogGradient, d: dGradient)
            let projection = randomTensor([rows, channels], &generator)
            SelectiveScan.backward(inputs, outputGradient: ColumnBlock(projection), into: gradients)
            for row in 0..<rows {
                XCTAssertEqual((0..<rank).map { selectionGradient[row * (rank + 2 * states) + $0] }, .init(repeating: sentinel, count: rank),
                               "\(context): wrote outside dB, dC")
                XCTAssertEqual((0..<channels).map { projectedGradient[row * 2 * channels + $0] }, .init(repeating: sentinel, count: channels),
                               "\(context): wrote outside dz")
            }
            let column = { (t: Tensor, offset: Int, width: Int) in
                ColumnBlock(t, offset: offset, width: width).contiguous().toArray()
            }
            var analytic = ["x": xGradient.toArray(), "timeStep": timeStepGradient.toArray(), "D": dGradient.toArray(),
                            "B": column(selectionGradient, rank, states), "C": column(selectionGradient, rank + states, states),
                            "z": column(projectedGradient, channels, channels)]
            if length == 1 {
                XCTAssertTrue(aLogGradient.toArray().allSatisfy { $0 == 0 }, "\(context): A_log does not act on a single step")
            } else {
                analytic["A_log"] = aLogGradient.toArray()
            }
            let r = doubles(projection)
            checkGradients(analytic: analytic, loss: { v in zip(reference(v), r).reduce(0) { $0 + $1.0 * $1.1 } },
                           at: variables, &generator, context)

            // A_log's and D's gradients accumulate; the blocks are overwritten.
            SelectiveScan.backward(inputs, outputGradient: ColumnBlock(projection), into: gradients)
            XCTAssertEqual(dGradient.toArray(), analytic["D"]!.map { 2 * $0 }, "\(context): dD accumulates")
            XCTAssertEqual(xGradient.toArray(), analytic["x"]!, "\(context): dx is overwritten")
        }
    }

    // MARK: Convolution

    func testCausalDepthwiseConv1dGradientsAndSchedules() throws {
        var generator = makeGenerator(22)
        for draw in 0..<4 {
            let (batch, length) = (generator.int(1...2), [1, 3, 9, 21][draw])
            let (channels, kernel, hasBias) = (generator.int(1...37), generator.int(1...5), draw % 2 == 0)
            let make = { (seed: UInt64) -> CausalDepthwiseConv1d in
                let layer = CausalDepthwiseConv1d(channels: channels, kernelSize: kernel, bias: hasBias)
                var generator = makeGenerator(seed)
                randomize(layer.parameters, std: 0.7, &generator)
                return layer
            }
            let layer = make(UInt64(100 + draw))
            XCTAssertEqual(layer.parameters.map(\.name), hasBias ? ["weight", "bias"] : ["weight"])
            XCTAssertEqual(layer.weight.value.shape, [channels, 1, kernel])
            let context = "conv1d [\(batch), \(length), \(channels)] kernel \(kernel)\(hasBias ? " with bias" : "")"
            try checkLayerGradients(context, layer, input: randomTensor([batch, length, channels], &generator), apply: layer.apply,
                                    reference: { x, w in
                Reference.causalDepthwiseConv(x, weight: w["weight"], bias: hasBias ? w["bias"] : nil,
                                              batch: batch, length: length, channels: channels, kernel: kernel)
            }, &generator)
            let inputs = (0..<3).map { _ in randomTensor([batch, length, channels], &generator) }
            let gradients = (0..<3).map { _ in randomTensor([batch, length, channels], &generator) }
            try checkSplitBackward(context, microBatches: 3) {
                SplitBackwardSubject(layer: make(UInt64(200 + draw)), inputs: inputs, outputGradients: gradients)
            }
        }
    }

    // MARK: Mixer

    func testMambaMixerGradientsAndSchedules() throws {
        var generator = makeGenerator(23)
        let biases: [(useBias: Bool, useConvBias: Bool)] = [(false, true), (true, true), (false, false), (true, false), (false, true)]
        let lengths = [5, 1, 17, 20, 2]
        for draw in 0..<biases.count {
            let hidden = generator.int(2...8)
            let configuration = MambaMixerConfiguration(
                hiddenSize: hidden, intermediateSize: generator.int(3...36), stateSize: generator.int(1...20),
                convKernel: generator.int(2...4), timeStepRank: generator.int(1...3),
                useBias: biases[draw].useBias, useConvBias: biases[draw].useConvBias)
            let (batch, length) = (generator.int(1...2), lengths[draw])
            let longMemory = draw % 2 == 0
            let make = { (seed: UInt64) -> MambaMixer in
                let mixer = try! MambaMixer(configuration)
                var generator = makeGenerator(seed)
                randomizeMixer(mixer, longMemory: longMemory, &generator)
                return mixer
            }
            let mixer = make(UInt64(100 + draw))
            let shape = referenceShape(configuration, batch: batch, length: length)
            let context = "MambaMixer [\(batch), \(length), \(hidden)] E \(configuration.intermediateSize) N \(configuration.stateSize) "
                + "K \(configuration.convKernel) r \(configuration.timeStepRank) bias \(configuration.useBias) conv bias \(configuration.useConvBias)"
            try checkLayerGradients(context, mixer, input: randomTensor([batch, length, hidden], &generator), apply: mixer.apply,
                                    vanishingGradients: length == 1 ? ["A_log"] : [],
                                    reference: { x, w in Reference.mambaMixer(x, shape, w) }, &generator)
            let inputs = (0..<3).map { _ in randomTensor([batch, length, hidden], &generator) }
            let gradients = (0..<3).map { _ in randomTensor([batch, length, hidden], &generator) }
            try checkSplitBackward(context, microBatches: 3) {
                SplitBackwardSubject(layer: make(UInt64(200 + draw)), inputs: inputs, outputGradients: gradients)
            }
        }
    }

    func testMambaMixerParameterNamesAndShapes() throws {
        let configuration = MambaMixerConfiguration(hiddenSize: 32, stateSize: 12, convKernel: 3, useBias: true)
        let mixer = try MambaMixer(configuration)
        XCTAssertEqual(mixer.parameters.map(\.name), [
            "in_proj.weight", "in_proj.bias", "conv1d.weight", "conv1d.bias", "x_proj.weight", "dt_proj.weight", "dt_proj.bias",
            "A_log", "D", "out_proj.weight", "out_proj.bias",
        ])
        XCTAssertEqual(mixer.parameters.map(\.value.shape), [[128, 32], [128], [64, 1, 3], [64], [2 + 24, 64], [64, 2], [64], [64, 12], [64], [32, 64], [32]],
                       "intermediate = 2 · hidden, time_step_rank = ⌈32 / 16⌉ by default")
        let plain = try MambaMixer(MambaMixerConfiguration(hiddenSize: 8, useConvBias: false))
        XCTAssertEqual(plain.parameters.map(\.name), ["in_proj.weight", "conv1d.weight", "x_proj.weight", "dt_proj.weight", "dt_proj.bias",
                                                      "A_log", "D", "out_proj.weight"])
    }

    func testMambaMixerRejectsBadShapesAndConfigurations() throws {
        let mixer = try MambaMixer(MambaMixerConfiguration(hiddenSize: 4, intermediateSize: 6, stateSize: 3))
        assertThrowsTwoBPError(try mixer.forward(Tensor(zeros: [1, 2, 5]), microBatch: 0), "wrong hidden size")
        assertThrowsTwoBPError(try mixer.forward(Tensor(zeros: [2, 4]), microBatch: 0), "not [batch, length, hidden]")
        assertThrowsTwoBPError(try mixer.apply(Tensor(zeros: [1, 2, 3])), "apply with the wrong hidden size")
        _ = try mixer.forward(Tensor(zeros: [1, 2, 4]), microBatch: 0)
        assertThrowsTwoBPError(try mixer.backwardInput(Tensor(zeros: [1, 3, 4]), microBatch: 0), "dy for three positions, output of two")
        let conv = CausalDepthwiseConv1d(channels: 3, kernelSize: 2)
        assertThrowsTwoBPError(try conv.forward(Tensor(zeros: [1, 2, 4]), microBatch: 0), "conv1d of the wrong width")
        _ = try conv.forward(Tensor(zeros: [1, 2, 3]), microBatch: 0)
        assertThrowsTwoBPError(try conv.backwardInput(Tensor(zeros: [1, 2, 2]), microBatch: 0), "conv1d dy of the wrong width")
        let block = try MambaBlock(MambaMixerConfiguration(hiddenSize: 4))
        assertThrowsTwoBPError(try block.forward(Tensor(zeros: [1, 2, 3]), microBatch: 0), "block of the wrong width")
        let invalid: [(String, (inout MambaMixerConfiguration) -> Void)] = [
            ("state_size 0", { $0.stateSize = 0 }), ("conv_kernel 0", { $0.convKernel = 0 }), ("time_step_rank 0", { $0.timeStepRank = 0 }),
            ("intermediate_size -1", { $0.intermediateSize = -1 }), ("time_step_min > max", { $0.timeStepMin = 0.5 }),
            ("time_step_min 0", { $0.timeStepMin = 0 }), ("num_hidden_layers 0", { $0.rescaledResidualLayers = 0 }),
        ]
        for (what, change) in invalid {
            var configuration = MambaMixerConfiguration(hiddenSize: 4)
            change(&configuration)
            assertThrowsTwoBPError(try MambaMixer(configuration), what)
        }
    }

    // MARK: Block

    func testMambaBlockGradientsAndSchedules() throws {
        var generator = makeGenerator(24)
        for (draw, length) in [1, 6, 18].enumerated() {
            let hidden = generator.int(2...6)
            let configuration = MambaMixerConfiguration(
                hiddenSize: hidden, intermediateSize: generator.int(2...20), stateSize: generator.int(1...18),
                convKernel: generator.int(2...4), timeStepRank: generator.int(1...2), useBias: draw == 1)
            let eps: Float = [1e-5, 1e-2, 1e-6][draw]
            let batch = generator.int(1...2)
            let make = { (seed: UInt64) -> MambaBlock in
                let block = try! MambaBlock(configuration, eps: eps)
                var generator = makeGenerator(seed)
                randomize(block.norm.parameters, std: 0.5, &generator)
                randomizeMixer(block.mixer, longMemory: draw != 1, &generator)
                return block
            }
            let block = make(UInt64(100 + draw))
            XCTAssertEqual(Array(block.parameters.map(\.name).prefix(3)), ["norm.weight", "mixer.in_proj.weight",
                                                                            draw == 1 ? "mixer.in_proj.bias" : "mixer.conv1d.weight"])
            var shape = referenceShape(configuration, batch: batch, length: length)
            shape.eps = Double(eps)
            let context = "MambaBlock [\(batch), \(length), \(hidden)] E \(configuration.intermediateSize) N \(configuration.stateSize) eps \(eps)"
            try checkLayerGradients(context, block, input: randomTensor([batch, length, hidden], &generator), apply: block.apply,
                                    vanishingGradients: length == 1 ? ["mixer.A_log"] : [],
                                    reference: { x, w in Reference.mambaBlock(x, shape, w) }, &generator)
            let inputs = (0..<3).map { _ in randomTensor([batch, length, hidden], &generator) }
            let gradients = (0..<3).map { _ in randomTensor([batch, length, hidden], &generator) }
            try checkSplitBackward(context, microBatches: 3) {
                SplitBackwardSubject(layer: make(UInt64(200 + draw)), inputs: inputs, outputGradients: gradients)
            }
        }
    }

    // MARK: Initialisation

    /// Hugging Face `MambaPreTrainedModel._init_weights` (the mixer's rules override nn.Linear's, being applied
    /// after the children): A_log = log(1 … N) per channel, D = 1, Δ bias = softplus⁻¹ of a log-uniform δ in
    /// [time_step_min, time_step_max] floored at time_step_floor, dt_proj.weight uniform in ±rank^−½ · scale,
    /// conv1d and out_proj Kaiming-uniform (±1 / √fan-in), in_proj and x_proj normal at the model's scale, biases 0;
    /// A_log, D and the biases without weight decay.
    func testMambaMixerStartsAsHuggingFaceInitialisesIt() throws {
        let configuration = MambaMixerConfiguration(hiddenSize: 256, stateSize: 12, convKernel: 4, timeStepRank: 9, useBias: true,
                                                    timeStepScale: 0.5)
        let mixer = try MambaMixer(configuration)
        let (inner, states) = (512, 12)
        for n in 0..<states {
            XCTAssertEqual(Double(mixer.aLog.value[5 * states + n]), log(Double(n + 1)), accuracy: 1e-6, "A_log holds before initialising")
        }
        var generator = makeGenerator(25)
        for parameter in mixer.parameters { startLikeHuggingFace(parameter, &generator) }
        let value = { (name: String) in mixer.parameters.first { $0.name == name }!.value.toArray().map(Double.init) }

        let aLog = value("A_log")
        for channel in [0, 17, inner - 1] {
            for n in 0..<states { XCTAssertEqual(aLog[channel * states + n], log(Double(n + 1)), accuracy: 1e-6, "A_log[\(channel), \(n)]") }
        }
        XCTAssertEqual(value("D"), .init(repeating: 1, count: inner))

        let deltas = value("dt_proj.bias").map(Reference.softplus)
        XCTAssertGreaterThanOrEqual(deltas.min()!, 0.001 * (1 - 1e-5))
        XCTAssertLessThanOrEqual(deltas.max()!, 0.1 * (1 + 1e-5))
        // Log-uniform over [log 0.001, log 0.1] (a width of 4.6): 512 draws fill it and centre on its middle.
        let logs = deltas.map(log)
        let (low, high) = (log(0.001), log(0.1))
        XCTAssertLessThan(logs.min()!, low + 0.1 * (high - low))
        XCTAssertGreaterThan(logs.max()!, high - 0.1 * (high - low))
        XCTAssertEqual(logs.reduce(0, +) / Double(logs.count), (low + high) / 2, accuracy: 0.1 * (high - low))

        let bound = { (name: String) in value(name).map(abs).max()! }
        XCTAssertLessThanOrEqual(bound("dt_proj.weight"), 0.5 / 3, "±rank^−½ · scale = 0.5 / √9")
        XCTAssertGreaterThan(bound("dt_proj.weight"), 0.9 * 0.5 / 3)
        XCTAssertLessThanOrEqual(bound("conv1d.weight"), 1 / 2, "±1 / √kernel")
        XCTAssertGreaterThan(bound("conv1d.weight"), 0.9 / 2)
        XCTAssertLessThanOrEqual(bound("out_proj.weight"), 1 / Double(inner).squareRoot(), "±1 / √intermediate")
        XCTAssertGreaterThan(bound("out_proj.weight"), 0.9 / Double(inner).squareRoot())
        for name in ["in_proj.bias", "conv1d.bias", "out_proj.bias"] { XCTAssertEqual(value(name), .init(repeating: 0, count: value(name).count)) }
        for name in ["in_proj.weight", "x_proj.weight"] {
            let parameter = mixer.parameters.first { $0.name == name }!
            guard case .normal(std: nil) = parameter.initialization else { return XCTFail("\(name) starts at the model's normal scale") }
        }
        XCTAssertEqual(mixer.parameters.filter { !$0.decays }.map(\.name),
                       ["in_proj.bias", "conv1d.bias", "dt_proj.bias", "A_log", "D", "out_proj.bias"])

        // The floor, the constant scheme and the prenorm-residual rescaling.
        var floored = MambaMixerConfiguration(hiddenSize: 64, timeStepMin: 1e-6, timeStepMax: 2e-4, timeStepInitScheme: .constant,
                                              rescaledResidualLayers: 16)
        floored.intermediateSize = 256
        let other = try MambaMixer(floored)
        for parameter in other.parameters { startLikeHuggingFace(parameter, &generator) }
        let flooredDeltas = other.dtProj.bias!.value.toArray().map { Reference.softplus(Double($0)) }
        XCTAssertGreaterThanOrEqual(flooredDeltas.min()!, 1e-4 * (1 - 1e-4))
        XCTAssertGreaterThan(flooredDeltas.filter { abs($0 - 1e-4) < 1e-8 }.count, 100, "about 7/8 of log-uniform [1e-6, 2e-4] is below the floor")
        XCTAssertEqual(Set(other.dtProj.weight.value.toArray()), [Float(0.5)], "constant: rank^−½ = 1 / √4")
        XCTAssertLessThanOrEqual(other.outProj.weight.value.toArray().map(abs).max()!, 1 / 16 / 4, "±1 / √256 / √16")
    }
}

/// Fills `parameter` as the model initialiser does (`ParameterInitialization.initialize`), with 0.02 as the scale.
private func startLikeHuggingFace(_ parameter: Parameter, _ generator: inout SeededGenerator) {
    switch parameter.initialization {
    case .normal(let std): parameter.value.fillNormal(std: std ?? 0.02, using: &generator)
    case .constant(let value): parameter.value.buffer.update(repeating: value)
    case .custom(let fill): fill(parameter.value, &generator)
    }
}

/// Parameters for a gradient check: matrices N(0, 0.5²), 1-D tensors 1 + N(0, 0.2²) (`randomize`). With
/// `longMemory` the Δ bias and A_log start as Hugging Face's (δ ∈ [0.001, 0.1], A ≈ −(1 … N), A_log jittered), so
/// the states decay slowly and gradients travel over many steps; without, δ ≈ 1 and they fade within a few.
private func randomizeMixer(_ mixer: MambaMixer, longMemory: Bool, _ generator: inout SeededGenerator) {
    randomize(mixer.parameters, std: 0.5, &generator)
    guard longMemory else { return }
    startLikeHuggingFace(mixer.dtProj.bias!, &generator)
    startLikeHuggingFace(mixer.aLog, &generator)
    for i in 0..<mixer.aLog.value.count { mixer.aLog.value[i] += Float(0.2 * generator.nextNormal()) }
}

private func referenceShape(_ configuration: MambaMixerConfiguration, batch: Int, length: Int) -> MambaReferenceShape {
    MambaReferenceShape(batch: batch, length: length, hidden: configuration.hiddenSize, intermediate: configuration.intermediateSize,
                        states: configuration.stateSize, kernel: configuration.convKernel, rank: configuration.timeStepRank,
                        useBias: configuration.useBias, useConvBias: configuration.useConvBias)
}
