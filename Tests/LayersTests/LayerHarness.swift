import Layers
import Tensor
import XCTest

/// A layer seen through its micro-batch API, so that `Layer` conformers, `Embedding` and
/// `LanguageModelHead` go through the same schedule checks.
struct SplitBackwardSubject {
    let parameters: [Parameter]
    /// Forward of micro-batch m (on that micro-batch's fixed input).
    let forward: (Int) throws -> Void
    /// p1 of micro-batch m (on its fixed output gradient); dx, empty when the input has no gradient.
    let backwardInput: (Int) throws -> [Float]
    let backwardWeight: (WeightGradientWork) throws -> Void
}

extension SplitBackwardSubject {
    init(layer: Layer, inputs: [Tensor], outputGradients: [Tensor]) {
        self.init(
            parameters: layer.parameters,
            forward: { _ = try layer.forward(inputs[$0], microBatch: $0) },
            backwardInput: { try layer.backwardInput(outputGradients[$0], microBatch: $0).toArray() },
            backwardWeight: { try layer.backwardWeight($0) })
    }
}

/// The split-backward contract of one layer over `microBatches` micro-batches, each subject from
/// `make` being a fresh layer with the same parameters:
///
/// - fused (forward, p1, p2 per micro-batch) vs all forwards, p1s in reverse, then p2 per
///   micro-batch in the same order: the same dx and gradients, bit for bit;
/// - p2 `.allPending` after all p1s: the sum of the per-micro-batch p2s, to Float rounding;
/// - every saved and stashed tensor is freed once p2 has run (the meter returns to zero);
/// - p2 before p1, p1 of an unknown micro-batch and a repeated forward throw `TwoBPError`
///   and leave the layer usable.
func checkSplitBackward(_ context: String, microBatches: Int, _ make: () -> SplitBackwardSubject,
                        file: StaticString = #filePath, line: UInt = #line) throws {
    let meter = MemoryMeter(name: context)
    let indices = Array(0..<microBatches)

    let fused = make()
    var fusedInputGradients: [[Float]] = []
    try MemoryMeter.withCurrent(meter) {
        for m in indices {
            try fused.forward(m)
            fusedInputGradients.append(try fused.backwardInput(m))
            try fused.backwardWeight(.microBatch(m))
        }
    }
    let fusedGradients = fused.parameters.map { $0.gradient.toArray() }
    XCTAssertEqual(meter.liveBytes, 0, "\(context): fused backward left tensors alive", file: file, line: line)

    let deferred = make()
    var deferredInputGradients = [[Float]](repeating: [], count: microBatches)
    try MemoryMeter.withCurrent(meter) {
        for m in indices { try deferred.forward(m) }
        for m in indices.reversed() { deferredInputGradients[m] = try deferred.backwardInput(m) }
        for m in indices { try deferred.backwardWeight(.microBatch(m)) }
    }
    XCTAssertEqual(deferredInputGradients, fusedInputGradients, "\(context): dx depends on the schedule", file: file, line: line)
    for (parameter, expected) in zip(deferred.parameters, fusedGradients) {
        XCTAssertEqual(parameter.gradient.toArray(), expected, "\(context): deferred p2 of \(parameter.name) differs from fused",
                       file: file, line: line)
    }
    XCTAssertEqual(meter.liveBytes, 0, "\(context): deferred p2 left tensors alive", file: file, line: line)

    let concatenated = make()
    try MemoryMeter.withCurrent(meter) {
        for m in indices { try concatenated.forward(m) }
        for m in indices { _ = try concatenated.backwardInput(m) }
        try concatenated.backwardWeight(.allPending)
        try concatenated.backwardWeight(.allPending)  // nothing left: a no-op
    }
    for (parameter, expected) in zip(concatenated.parameters, fusedGradients) {
        let error = relativeError(parameter.gradient.toArray().map(Double.init), expected.map(Double.init))
        XCTAssertLessThan(error, 1e-5, "\(context): p2 .allPending of \(parameter.name) vs summed .microBatch p2",
                          file: file, line: line)
    }
    XCTAssertEqual(meter.liveBytes, 0, "\(context): p2 .allPending left tensors alive", file: file, line: line)

    let misused = make()
    assertThrowsTwoBPError(try misused.backwardWeight(.microBatch(0)), "\(context): p2 with nothing pending", file: file, line: line)
    assertThrowsTwoBPError(try misused.backwardInput(0), "\(context): p1 before forward", file: file, line: line)
    try misused.forward(0)
    assertThrowsTwoBPError(try misused.forward(0), "\(context): second forward of one micro-batch", file: file, line: line)
    assertThrowsTwoBPError(try misused.backwardWeight(.microBatch(0)), "\(context): p2 before p1", file: file, line: line)
    assertThrowsTwoBPError(try misused.backwardInput(1), "\(context): p1 of an unknown micro-batch", file: file, line: line)
    XCTAssertEqual(try misused.backwardInput(0), fusedInputGradients[0], "\(context): p1 after refused calls", file: file, line: line)
    try misused.backwardWeight(.microBatch(0))
}

/// Forward, p1 and p2 of `layer` on `input` against the Double `reference` forward:
/// the Float output matches it, and dx and every dW match central differences of Σ r · reference(x)
/// for a random r. `apply`, when given, is the layer's inference path and must equal forward bit for bit.
/// Parameters named in `vanishingGradients` have an exactly zero true gradient (attention's key bias:
/// softmax ignores a shift shared by a whole row of scores; Mamba's A_log over a single step), so
/// differences have nothing to compare relatively; their analytic gradient must instead be
/// rounding-small against the largest other one.
func checkLayerGradients(
    _ context: String, _ layer: Layer, input: Tensor, apply: ((Tensor) throws -> Tensor)? = nil,
    vanishingGradients: Set<String> = [],
    reference: @escaping ([Double], Weights) -> [Double], _ generator: inout SeededGenerator,
    file: StaticString = #filePath, line: UInt = #line
) throws {
    var variables = doubleValues(layer.parameters)
    variables["input"] = doubles(input)
    let output = try layer.forward(input, microBatch: 0)
    let expected = reference(variables["input"]!, Weights(values: variables))
    XCTAssertLessThan(relativeError(doubles(output), expected), forwardTolerance, "\(context): forward vs Double reference",
                      file: file, line: line)
    if let apply {
        XCTAssertEqual(try apply(input).toArray(), output.toArray(), "\(context): inference path differs from forward", file: file, line: line)
    }

    let projection = randomTensor(output.shape, &generator)
    let inputGradient = try layer.backwardInput(projection, microBatch: 0)
    try layer.backwardWeight(.microBatch(0))
    var analytic = ["input": inputGradient.toArray()]
    for parameter in layer.parameters { analytic[parameter.name] = parameter.gradient.toArray() }
    let vanishing = vanishingGradients.map { analytic.removeValue(forKey: $0)! }
    let largest = analytic.values.joined().map(abs).max() ?? 0
    for (name, gradient) in zip(vanishingGradients, vanishing) {
        XCTAssertLessThan(gradient.map(abs).max() ?? 0, 1e-5 * largest, "\(context): d loss / d \(name) should vanish",
                          file: file, line: line)
    }

    let r = doubles(projection)
    checkGradients(analytic: analytic, loss: { variables in
        zip(reference(variables["input"]!, Weights(values: variables)), r).reduce(0) { $0 + $1.0 * $1.1 }
    }, at: variables, &generator, context, file: file, line: line)
}
