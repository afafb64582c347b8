import Tensor

/// The end of torchvision's ResNet: global average pool, the fully connected classifier `fc` and
/// softmax cross-entropy against class labels.
///
/// Not a `Layer`: forward takes images x [batch, height, width, features] and labels (one per
/// image) and ends in numbers, `loss = Σ_images lossWeight · CE` (accumulated in Double) and how many
/// images the logits classify as labelled (the accuracy a training step reports), and p1 starts from the loss. As in `LanguageModelHead`, forward writes dlogits = lossWeight · (softmax − onehot)
/// over the logits and keeps that [batch, classes]; p1 is fc's p1 and the pool's p1, p2 fc's p2.
/// `fc.weight` [classes, features] and `fc.bias` [classes] start as `nn.Linear`'s default (torchvision
/// leaves it): U(−1/√features, 1/√features) for both.
public final class ClassifierHead {
    public let features: Int
    public let classes: Int
    public let avgpool: GlobalAveragePool
    public let fc: Linear
    public let parameters: [Parameter]
    /// dlogits [batch, classes], kept from forward for p1.
    private var saved = MicroBatchStore<Tensor>("ClassifierHead forward state")

    public init(features: Int, classes: Int) {
        precondition(features > 0 && classes > 0, "ClassifierHead: \(features) features, \(classes) classes")
        self.features = features
        self.classes = classes
        avgpool = GlobalAveragePool()
        let bound = 1 / Float(features).squareRoot()
        let uniform = Parameter.Initialization.custom { tensor, generator in tensor.fillUniform(bound: bound, using: &generator) }
        fc = Linear(inputSize: features, outputSize: classes, bias: true, weightInitialization: uniform, biasInitialization: uniform)
        parameters = fc.parameters.map { $0.prefixed("fc") }
    }

    /// Σ lossWeight · CE over the images of x [batch, height, width, features] against `labels` (one
    /// per image), and the images classified correctly (counted before dlogits overwrite the logits);
    /// saves dlogits under `microBatch`.
    public func forward(_ input: Tensor, labels: [Int32], lossWeight: Float, microBatch: Int) throws -> (loss: Double, correct: Int) {
        try validate(input, labels: labels)
        let logits = try fc.forward(avgpool.forward(input, microBatch: microBatch), microBatch: microBatch)
        let correct = correctCount(logits, labels: labels)
        let loss = crossEntropy(logits: logits.pointer, targets: labels, vocabularySize: classes, lossWeight: lossWeight, writeGradient: true)
        try saved.put(logits, for: microBatch)
        return (loss, correct)
    }

    /// p1: dx [batch, height, width, features] of the loss.
    public func backwardInput(microBatch: Int) throws -> Tensor {
        let logitsGradient = try saved.take(microBatch)
        return try avgpool.backwardInput(fc.backwardInput(logitsGradient, microBatch: microBatch), microBatch: microBatch)
    }

    public func backwardWeight(_ work: WeightGradientWork) throws {
        try fc.backwardWeight(work)
        try avgpool.backwardWeight(work)
    }

    /// Logits [batch, classes] of x [batch, height, width, features], saving nothing (for inference).
    public func logits(_ input: Tensor) throws -> Tensor {
        _ = try checkedImageShape(of: input, channels: features, layer: "ClassifierHead")
        return fc.apply(try avgpool.apply(input))
    }

    /// The forward loss and how many images the logits' arg-max (first maximum) classifies as
    /// labelled, saving nothing (for evaluation).
    public func evaluate(_ input: Tensor, labels: [Int32], lossWeight: Float) throws -> (loss: Double, correct: Int) {
        try validate(input, labels: labels)
        let logits = try logits(input)
        let loss = crossEntropy(logits: logits.pointer, targets: labels, vocabularySize: classes, lossWeight: lossWeight, writeGradient: false)
        return (loss, correctCount(logits, labels: labels))
    }

    /// Images whose logits' arg-max (first maximum) is their label; logits [batch, classes].
    private func correctCount(_ logits: Tensor, labels: [Int32]) -> Int {
        var correct = 0
        for (image, label) in labels.enumerated() {
            let row = logits.pointer + image * classes
            var best = 0
            for j in 1..<classes where row[j] > row[best] { best = j }
            if best == Int(label) { correct += 1 }
        }
        return correct
    }

    /// Throws unless x is [batch, height, width, features] with one label per image, each a class id.
    public func validate(_ input: Tensor, labels: [Int32]) throws {
        let (batch, _, _) = try checkedImageShape(of: input, channels: features, layer: "ClassifierHead")
        guard labels.count == batch else {
            throw TwoBPError("ClassifierHead: \(labels.count) labels for \(batch) images")
        }
        if let bad = labels.first(where: { $0 < 0 || Int($0) >= classes }) {
            throw TwoBPError("ClassifierHead: label \(bad) is outside the \(classes) classes")
        }
    }
}
