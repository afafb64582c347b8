import Files
import Foundation
import Models
import Tensor

/// scikit-learn's handwritten digits (`sklearn.datasets.load_digits`: 1,797 grey 8 × 8 images of
/// 0–9, pixel values 0–16), as scripts/setup-data.sh exports them into data/digits.bin: one record
/// of 65 bytes per image, its label then its 64 pixels row by row.
///
/// Every fifth image (index 4, 9, 14, …) is held out for validation; the rest train. Images are
/// scaled to v / 8 − 1 (so −1 … 1), enlarged to the run's side by repeating pixels (nearest
/// neighbour; side 16 doubles them) and repeated over the model's channels.
///
/// - Training batches: the batch of step s is `batchSize` training images drawn with replacement
///   from a generator seeded by (seed, s), so a resumed run draws the same ones.
/// - Validation batches: the held-out images in order, in full batches.
public final class DigitsImages: DataSource {
    public static let recordSize = 65
    public static let nativeSide = 8
    public static let classCount = 10
    /// Every `heldOutEvery`-th image (the last of each group) is held out.
    public static let heldOutEvery = 5

    public let source: String
    public let fingerprint: String
    public let side: Int
    public let channels: Int
    /// [count][64] pixel values 0–16 and [count] labels, in file order.
    public let pixels: [[UInt8]]
    public let labels: [Int32]
    public let trainingIndices: [Int]
    public let heldOutIndices: [Int]

    public var throughputUnit: ThroughputUnit { .samples }

    /// Reads data/digits.bin (or `url`); errors name the file and say how to build it.
    public convenience init(contentsOf url: URL, side: Int, channels: Int) throws {
        guard FileIO.isFile(url) else {
            throw TwoBPError("digits file \(url.path) not found: scripts/setup-data.sh exports it (it needs the reference Python environment with scikit-learn, scripts/setup-reference-venv.sh); or train on --data synthetic")
        }
        try self.init(bytes: [UInt8](FileIO.read(url, what: "digits file")), side: side, channels: channels, source: "digits file \(url.path)")
    }

    public init(bytes: [UInt8], side: Int, channels: Int, source: String = "digits") throws {
        guard side >= 1, channels >= 1 else { throw TwoBPError("digits: image side \(side) and \(channels) channels must be positive") }
        guard !bytes.isEmpty, bytes.count % DigitsImages.recordSize == 0 else {
            throw TwoBPError("\(source) holds \(bytes.count) bytes, not a whole number of \(DigitsImages.recordSize)-byte records (label + 8 × 8 pixels); rebuild it with scripts/setup-data.sh")
        }
        let count = bytes.count / DigitsImages.recordSize
        var pixels: [[UInt8]] = []
        var labels: [Int32] = []
        for index in 0..<count {
            let record = bytes[index * DigitsImages.recordSize..<(index + 1) * DigitsImages.recordSize]
            let label = record.first!
            guard label < DigitsImages.classCount else { throw TwoBPError("\(source): image \(index) has label \(label), not a digit") }
            let values = Array(record.dropFirst())
            if let bad = values.first(where: { $0 > 16 }) { throw TwoBPError("\(source): image \(index) has pixel value \(bad) > 16") }
            labels.append(Int32(label))
            pixels.append(values)
        }
        let indices = Array(0..<count)
        trainingIndices = indices.filter { $0 % DigitsImages.heldOutEvery != DigitsImages.heldOutEvery - 1 }
        heldOutIndices = indices.filter { $0 % DigitsImages.heldOutEvery == DigitsImages.heldOutEvery - 1 }
        guard !trainingIndices.isEmpty, !heldOutIndices.isEmpty else {
            throw TwoBPError("\(source) holds \(count) images, too few for a training and a held-out part")
        }
        self.source = source
        self.side = side
        self.channels = channels
        self.pixels = pixels
        self.labels = labels
        fingerprint = "digits-\(count)-" + String(format: "%016llx", ParameterInitialization.fnv1a64(bytes))
    }

    public func trainingBatch(step: Int, batchSize: Int, seed: UInt64) -> any MicroBatch {
        var generator = SeededGenerator(seed: ImageBatch.mixedSeed(seed, UInt64(bitPattern: Int64(step))))
        let chosen = (0..<batchSize).map { _ in
            trainingIndices[Int(generator.next().multipliedFullWidth(by: UInt64(trainingIndices.count)).high)]
        }
        return batch(chosen, lossWeight: 1 / Float(batchSize))
    }

    public func validationBatches(batchSize: Int, limit: Int?) throws -> [any MicroBatch] {
        guard batchSize >= 1 else { throw TwoBPError("batch size must be >= 1, not \(batchSize)") }
        var count = heldOutIndices.count / batchSize
        guard count >= 1 else {
            throw TwoBPError("the held-out part of \(source) holds \(heldOutIndices.count) images, fewer than one batch of \(batchSize)")
        }
        if let limit { count = Swift.min(count, Swift.max(limit, 0)) }
        return (0..<count).map { b in
            batch(Array(heldOutIndices[b * batchSize..<(b + 1) * batchSize]), lossWeight: 1 / Float(batchSize))
        }
    }

    /// Images `indices`, scaled, enlarged to `side` and repeated over `channels`.
    public func batch(_ indices: [Int], lossWeight: Float) -> ImageBatch {
        let native = DigitsImages.nativeSide
        var images: [Float] = []
        images.reserveCapacity(indices.count * side * side * channels)
        for index in indices {
            let image = pixels[index]
            for h in 0..<side {
                for w in 0..<side {
                    let value = Float(image[(h * native / side) * native + w * native / side]) / 8 - 1
                    for _ in 0..<channels { images.append(value) }
                }
            }
        }
        return ImageBatch(images: images, labels: indices.map { labels[$0] }, batchSize: indices.count, side: side, channels: channels,
                          lossWeight: lossWeight)
    }
}
