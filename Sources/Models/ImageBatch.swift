import Tensor

/// Square channels-last images and their class labels: the micro-batch of image classifiers (ResNet).
public struct ImageBatch: MicroBatch {
    /// [batchSize, side, side, channels] pixel values, row-major (channels last, as the layers take them).
    public let images: [Float]
    /// [batchSize] class ids.
    public let labels: [Int32]
    public let batchSize: Int
    /// Height and width of every image.
    public let side: Int
    public let channels: Int
    /// Weight of each image's loss terms in the step: 1 / (images in the whole step), so that summing
    /// micro-batch gradients gives the whole batch's mean-loss gradient (and the accuracy term sums to
    /// the step's fraction of correct images).
    public let lossWeight: Float

    public init(images: [Float], labels: [Int32], batchSize: Int, side: Int, channels: Int, lossWeight: Float) {
        precondition(images.count == batchSize * side * side * channels && labels.count == batchSize,
                     "ImageBatch: \(images.count) values and \(labels.count) labels for \(batchSize) images of \(side)×\(side)×\(channels)")
        self.images = images
        self.labels = labels
        self.batchSize = batchSize
        self.side = side
        self.channels = channels
        self.lossWeight = lossWeight
    }

    public var sampleCount: Int { batchSize }
    public var sampleLength: Int { side }
    /// Values per image.
    public var imageSize: Int { side * side * channels }

    public func samples(_ range: Range<Int>) -> any MicroBatch { images(range) }

    /// Images `range` of this batch, keeping the step's loss weight.
    public func images(_ range: Range<Int>) -> ImageBatch {
        ImageBatch(images: Array(images[range.lowerBound * imageSize..<range.upperBound * imageSize]), labels: Array(labels[range]),
                   batchSize: range.count, side: side, channels: channels, lossWeight: lossWeight)
    }

    /// The images as a tensor [batchSize, side, side, channels].
    public func tensor() -> Tensor {
        let tensor = Tensor(uninitialized: [batchSize, side, side, channels])
        images.withUnsafeBufferPointer { tensor.buffer.update(from: $0) }
        return tensor
    }
}

extension ImageBatch {
    /// Seeded synthetic images that a classifier can learn, of any side and count: image i's label is
    /// drawn from (seed, i), and its pixels are its class's prototype, a 4 × 4 grid of N(0, 1) values
    /// per channel drawn from (seed, class) and spread over the image in 4 × 4 blocks, plus N(0, 1)
    /// noise per pixel drawn from (seed, i). Each image is a pure function of (seed, i), made on demand,
    /// so a set of 224 × 224 images costs no memory until a batch is drawn.
    public static func synthetic(indices: [Int], side: Int, channels: Int, classes: Int, seed: UInt64,
                                 lossWeight: Float) -> ImageBatch {
        precondition(side >= 1 && channels >= 1 && classes >= 1, "synthetic images: side \(side), \(channels) channels, \(classes) classes")
        let grid = 4
        var prototypes: [Int: [Float]] = [:]
        func prototype(_ label: Int) -> [Float] {
            if let known = prototypes[label] { return known }
            var generator = SeededGenerator(seed: mixedSeed(seed, 0xC1A55 &+ UInt64(label)))
            let values = (0..<grid * grid * channels).map { _ in Float(generator.nextNormal()) }
            prototypes[label] = values
            return values
        }
        let imageSize = side * side * channels
        var images = [Float](repeating: 0, count: indices.count * imageSize)
        var labels: [Int32] = []
        for (slot, index) in indices.enumerated() {
            var generator = SeededGenerator(seed: mixedSeed(seed, UInt64(bitPattern: Int64(index))))
            let label = Int(generator.next() % UInt64(classes))
            labels.append(Int32(label))
            let coarse = prototype(label)
            for h in 0..<side {
                for w in 0..<side {
                    let cell = ((h * grid / side) * grid + w * grid / side) * channels
                    let pixel = slot * imageSize + (h * side + w) * channels
                    for c in 0..<channels { images[pixel + c] = coarse[cell + c] + Float(generator.nextNormal()) }
                }
            }
        }
        return ImageBatch(images: images, labels: labels, batchSize: indices.count, side: side, channels: channels, lossWeight: lossWeight)
    }

    /// A generator seed decorrelating `value` under `seed` (SplitMix64 of each in turn).
    public static func mixedSeed(_ seed: UInt64, _ value: UInt64) -> UInt64 {
        var first = SeededGenerator(seed: seed)
        var second = SeededGenerator(seed: first.next() ^ value)
        return second.next()
    }
}

/// What an image data source needs to know of the classifier it feeds.
public protocol ImageClassifierConfig: ModelConfig {
    /// Channels of each input image.
    var imageChannels: Int { get }
    /// Labels run over 0 ..< classCount.
    var classCount: Int { get }
}
