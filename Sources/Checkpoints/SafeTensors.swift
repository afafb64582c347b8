import Files
import Foundation
import Layers
import Tensor

#if _endian(big)
#error("safetensors data is little-endian; SafeTensorsFile copies it without byte swapping")
#endif

/// A tensor with its checkpoint name, e.g. `model.layers.0.self_attn.q_proj.weight`.
public typealias NamedTensor = (name: String, tensor: Tensor)

/// One tensor as a file stores it: name, dtype, shape and the raw little-endian bytes, borrowed
/// from the Float32 `Tensor` or the `Buffer` that owns them (kept alive by `owner`).
public struct StoredTensor {
    public let name: String
    public let dtype: SafeTensorsDType
    public let shape: [Int]
    public let bytes: UnsafeRawBufferPointer
    private let owner: AnyObject

    public init(_ named: NamedTensor) {
        name = named.name
        dtype = .f32
        shape = named.tensor.shape
        bytes = UnsafeRawBufferPointer(start: named.tensor.pointer, count: named.tensor.count * MemoryLayout<Float>.stride)
        owner = named.tensor
    }

    public init(_ buffer: Buffer) {
        name = buffer.name
        dtype = buffer.dtype == .float32 ? .f32 : .i64
        shape = buffer.shape
        bytes = UnsafeRawBufferPointer(buffer.bytes)
        owner = buffer
    }

    /// A record owning a copy of `bytes` (from a file read into memory).
    init(name: String, dtype: SafeTensorsDType, shape: [Int], copying source: UnsafeRawBufferPointer) {
        let storage = UnsafeMutableRawBufferPointer.allocate(byteCount: Swift.max(source.count, 1), alignment: 8)
        storage.copyMemory(from: source)
        self.name = name
        self.dtype = dtype
        self.shape = shape
        bytes = UnsafeRawBufferPointer(rebasing: storage[0..<source.count])
        owner = Allocation(storage)
    }

    /// Frees a copied record's bytes with the record.
    private final class Allocation {
        let storage: UnsafeMutableRawBufferPointer
        init(_ storage: UnsafeMutableRawBufferPointer) { self.storage = storage }
        deinit { storage.deallocate() }
    }

    /// Float32 tensors, then buffers.
    public static func records(_ tensors: [NamedTensor], _ buffers: [Buffer]) -> [StoredTensor] {
        tensors.map(StoredTensor.init) + buffers.map(StoredTensor.init)
    }
}

/// A header entry as JSON spells it.
struct HeaderEntry: Codable {
    var dtype: String
    var shape: [Int]
    var dataOffsets: [Int]

    enum CodingKeys: String, CodingKey {
        case dtype, shape, dataOffsets = "data_offsets"
    }
}

/// The header object: `__metadata__` (string values) beside one entry per tensor name.
struct Header: Encodable {
    var metadata: [String: String]
    var entries: [String: HeaderEntry]

    struct Key: CodingKey {
        let stringValue: String
        init(stringValue: String) { self.stringValue = stringValue }
        var intValue: Int? { nil }
        init?(intValue: Int) { nil }
    }

    func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: Key.self)
        if !metadata.isEmpty { try container.encode(metadata, forKey: Key(stringValue: "__metadata__")) }
        for (name, entry) in entries { try container.encode(entry, forKey: Key(stringValue: name)) }
    }
}

/// The header as read, each entry checked against its own dtype and shape. Foundation's decoder
/// keeps the last of two entries with the same name; the data-coverage check that follows then
/// finds the bytes the dropped one claimed.
struct ParsedHeader: Decodable {
    var metadata: [String: String] = [:]
    var entries: [SafeTensorsEntry] = []

    init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: Header.Key.self)
        for key in container.allKeys {
            let name = key.stringValue
            if name == "__metadata__" {
                guard let items = try? container.decode([String: JSONScalar].self, forKey: key) else {
                    throw TwoBPError("__metadata__ is not an object")
                }
                for (item, value) in items {
                    guard case .string(let text) = value else { throw TwoBPError("__metadata__ value of '\(item)' is not a string") }
                    metadata[item] = text
                }
                continue
            }
            guard let fields = try? container.nestedContainer(keyedBy: HeaderEntry.CodingKeys.self, forKey: key) else {
                throw TwoBPError("entry '\(name)' is not an object")
            }
            entries.append(try ParsedHeader.entry(name: name, fields))
        }
    }

    private static func entry(name: String, _ fields: KeyedDecodingContainer<HeaderEntry.CodingKeys>) throws -> SafeTensorsEntry {
        guard let dtypeName = try? fields.decode(String.self, forKey: .dtype) else { throw TwoBPError("tensor '\(name)' has no dtype string") }
        guard let dtype = SafeTensorsDType(rawValue: dtypeName) else {
            throw TwoBPError("tensor '\(name)' has unknown dtype \(dtypeName)")
        }
        guard let dimensions = try? fields.decode([JSONScalar].self, forKey: .shape) else {
            throw TwoBPError("tensor '\(name)' has no shape array")
        }
        var shape: [Int] = []
        var elements = 1
        for dimension in dimensions {
            guard case .integer(let d) = dimension, d >= 0 else {
                throw TwoBPError("tensor '\(name)' has an invalid dimension \(dimension) in its shape")
            }
            let (product, overflow) = elements.multipliedReportingOverflow(by: d)
            guard !overflow else { throw TwoBPError("tensor '\(name)' shape \(dimensions) is too large") }
            shape.append(d)
            elements = product
        }
        guard let offsets = try? fields.decode([JSONScalar].self, forKey: .dataOffsets), offsets.count == 2,
              case .integer(let begin) = offsets[0], case .integer(let end) = offsets[1], begin >= 0, begin <= end
        else {
            throw TwoBPError("tensor '\(name)' needs data_offsets [begin, end] with 0 <= begin <= end")
        }
        let (bytes, overflow) = elements.multipliedReportingOverflow(by: dtype.byteSize)
        guard !overflow, bytes == end - begin else {
            throw TwoBPError("tensor '\(name)' data_offsets [\(begin), \(end)] hold \(end - begin) bytes, but shape \(shape) of \(dtype.rawValue) needs \(overflow ? "more" : String(bytes))")
        }
        return SafeTensorsEntry(name: name, dtype: dtype, shape: shape, dataOffsets: begin..<end)
    }
}

/// A JSON value where the header wants a string or an integer: decoding it never fails, so the
/// entry check can say what was wrong.
enum JSONScalar: Decodable, CustomStringConvertible {
    case integer(Int)
    case string(String)
    case other(String)

    init(from decoder: Decoder) throws {
        let value = try decoder.singleValueContainer()
        if let integer = try? value.decode(Int.self) {
            self = .integer(integer)
        } else if let text = try? value.decode(String.self) {
            self = .string(text)
        } else if let number = try? value.decode(Double.self) {
            self = .other(String(number))
        } else {
            self = .other("a non-scalar value")
        }
    }

    var description: String {
        switch self {
        case .integer(let value): String(value)
        case .string(let text): "\"\(text)\""
        case .other(let text): text
        }
    }
}

/// `<base>.safetensors.index.json`, Hugging Face's sharded form.
struct ShardIndex: Codable {
    struct Metadata: Codable {
        var totalSize: Int
        enum CodingKeys: String, CodingKey { case totalSize = "total_size" }
    }
    var metadata: Metadata?
    var weightMap: [String: String]

    enum CodingKeys: String, CodingKey { case metadata, weightMap = "weight_map" }
}

/// Element types the safetensors format defines. TwoBP writes `F32` (weights, optimizer state,
/// float buffers) and `I64` (counters), reads `F32`, `F16`, `BF16` and `F64` into Float32
/// tensors and `F32` or `I64` into buffers of that type; the others are known, so their sizes
/// validate, but cannot be loaded.
public enum SafeTensorsDType: String, CaseIterable, Sendable {
    case bool = "BOOL", u8 = "U8", i8 = "I8", f8e5m2 = "F8_E5M2", f8e4m3 = "F8_E4M3"
    case i16 = "I16", u16 = "U16", f16 = "F16", bf16 = "BF16"
    case i32 = "I32", u32 = "U32", f32 = "F32"
    case i64 = "I64", u64 = "U64", f64 = "F64"

    public var byteSize: Int {
        switch self {
        case .bool, .u8, .i8, .f8e5m2, .f8e4m3: return 1
        case .i16, .u16, .f16, .bf16: return 2
        case .i32, .u32, .f32: return 4
        case .i64, .u64, .f64: return 8
        }
    }

    /// Whether `SafeTensorsFile` converts this type to Float32.
    public var isLoadable: Bool {
        switch self {
        case .f32, .f16, .bf16, .f64: return true
        default: return false
        }
    }
}

/// One tensor's header entry, validated against the file.
public struct SafeTensorsEntry: Equatable, Sendable {
    public let name: String
    public let dtype: SafeTensorsDType
    public let shape: [Int]
    /// Byte range within the data section (after the header), as `data_offsets` says.
    public let dataOffsets: Range<Int>
    public var elementCount: Int { shape.reduce(1, *) }
}

/// Reading and writing the Hugging Face safetensors format
/// (https://github.com/huggingface/safetensors), single files and the sharded
/// `model-00001-of-00002.safetensors` + `model.safetensors.index.json` form.
///
/// Layout: 8-byte little-endian header length N; N bytes of UTF-8 JSON
/// `{"__metadata__": {...}, "name": {"dtype": "F32", "shape": [out, in],
/// "data_offsets": [begin, end]}, ...}` padded with spaces so the data starts on
/// an 8-byte boundary; then the tensors' bytes, contiguous, in header order.
/// Matrices are stored as given: a Linear weight `[out, in]`, as PyTorch does.
public enum SafeTensors {
    /// The metadata Hugging Face tools expect of PyTorch-layout weights.
    public static let defaultMetadata = ["format": "pt"]
    /// Headers beyond this size are rejected as corrupt (the reference implementation's limit).
    public static let maxHeaderBytes = 100_000_000

    // MARK: Writing

    /// Writes `tensors` as F32 and `buffers` in their own dtypes to `url` (fsynced before returning).
    public static func write(_ tensors: [NamedTensor], buffers: [Buffer] = [], to url: URL,
                             metadata: [String: String] = defaultMetadata) throws {
        try write(StoredTensor.records(tensors, buffers), to: url, metadata: metadata)
    }

    /// Writes `records`, in order, to `url` (fsynced before returning).
    public static func write(_ records: [StoredTensor], to url: URL, metadata: [String: String] = defaultMetadata) throws {
        let header = try encodeHeader(records, metadata: metadata)
        try FileIO.writeDurably(url) { sink in
            try header.withUnsafeBytes { try sink.write($0) }
            for record in records { try sink.write(record.bytes) }
        }
    }

    /// The bytes of a safetensors file holding `tensors` (F32) and `buffers` (for sending a stage's
    /// state to another rank, or for tests).
    public static func encode(_ tensors: [NamedTensor], buffers: [Buffer] = [],
                              metadata: [String: String] = defaultMetadata) throws -> [UInt8] {
        let records = StoredTensor.records(tensors, buffers)
        var bytes = try encodeHeader(records, metadata: metadata)
        for record in records { bytes.append(contentsOf: record.bytes) }
        return bytes
    }

    /// The 8-byte length and the space-padded JSON header for `records`, laid out in order.
    static func encodeHeader(_ records: [StoredTensor], metadata: [String: String]) throws -> [UInt8] {
        var entries: [String: HeaderEntry] = [:]
        var offset = 0
        for record in records {
            guard record.name != "__metadata__" else { throw TwoBPError("a tensor cannot be named __metadata__") }
            guard entries[record.name] == nil else { throw TwoBPError("tensor name '\(record.name)' appears twice in one safetensors file") }
            entries[record.name] = HeaderEntry(dtype: record.dtype.rawValue, shape: record.shape,
                                               dataOffsets: [offset, offset + record.bytes.count])
            offset += record.bytes.count
        }
        // Sorted keys: the same tensors always give the same bytes (the format does not order
        // the header; the data follows `records`' order, which the offsets say).
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var json = [UInt8](try encoder.encode(Header(metadata: metadata, entries: entries)))
        json.append(contentsOf: repeatElement(UInt8(ascii: " "), count: (8 - json.count % 8) % 8))
        var bytes: [UInt8] = []
        bytes.reserveCapacity(8 + json.count)
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { bytes.append(contentsOf: $0) }
        bytes.append(contentsOf: json)
        return bytes
    }

    /// File name of shard `index` (0-based) of `count`: `model-00001-of-00002.safetensors`.
    public static func shardFileName(baseName: String = "model", index: Int, count: Int) -> String {
        func pad(_ n: Int) -> String {
            let s = String(n)
            return String(repeating: "0", count: Swift.max(0, 5 - s.count)) + s
        }
        return "\(baseName)-\(pad(index + 1))-of-\(pad(count)).safetensors"
    }

    /// Writes the Hugging Face sharded form into `directory`: one file per element
    /// of `shards` plus `<baseName>.safetensors.index.json` mapping every tensor
    /// to its file. A single shard is written as plain `<baseName>.safetensors`
    /// with no index, as Hugging Face does. A stale single file or index of the
    /// other form under the same base name is removed, so the loader cannot pick it.
    /// Returns the files written.
    @discardableResult
    public static func writeSharded(_ shards: [[StoredTensor]], to directory: URL, baseName: String = "model",
                                    metadata: [String: String] = defaultMetadata) throws -> [URL] {
        guard !shards.isEmpty else { throw TwoBPError("writeSharded needs at least one shard") }
        try FileIO.createDirectory(directory)
        let single = directory.appendingPathComponent("\(baseName).safetensors")
        let index = directory.appendingPathComponent("\(baseName).safetensors.index.json")
        if shards.count == 1 {
            try FileIO.remove(index)
            try write(shards[0], to: single, metadata: metadata)
            return [single]
        }
        var written: [URL] = []
        for (i, shard) in shards.enumerated() {
            let url = directory.appendingPathComponent(shardFileName(baseName: baseName, index: i, count: shards.count))
            try write(shard, to: url, metadata: metadata)
            written.append(url)
        }
        try writeIndex(zip(written, shards).map { url, shard in (url.lastPathComponent, shard.map { ($0.name, $0.bytes.count) }) },
                       to: directory, baseName: baseName)
        try FileIO.remove(single)
        return written + [index]
    }

    /// Writes `<baseName>.safetensors.index.json` for shards already in `directory`: for each
    /// shard file, the names and data bytes of its tensors. A name in two shards is an error.
    public static func writeIndex(_ shards: [(file: String, tensors: [(name: String, bytes: Int)])], to directory: URL,
                                  baseName: String = "model") throws {
        var weightMap: [String: String] = [:]
        var totalSize = 0
        for shard in shards {
            for tensor in shard.tensors {
                guard weightMap.updateValue(shard.file, forKey: tensor.name) == nil else {
                    throw TwoBPError("tensor name '\(tensor.name)' appears in two shards")
                }
                totalSize += tensor.bytes
            }
        }
        let index = ShardIndex(metadata: .init(totalSize: totalSize), weightMap: weightMap)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        try FileIO.writeDurably(directory.appendingPathComponent("\(baseName).safetensors.index.json"),
                                bytes: [UInt8](encoder.encode(index)) + [UInt8(ascii: "\n")])
    }

    /// Splits `tensors`, in order, into shards of at most `maxShardBytes` of data
    /// each (a larger tensor gets a shard of its own), as `save_pretrained` does.
    public static func partition(_ tensors: [StoredTensor], maxShardBytes: Int) -> [[StoredTensor]] {
        var shards: [[StoredTensor]] = []
        var current: [StoredTensor] = []
        var currentBytes = 0
        for item in tensors {
            if !current.isEmpty && currentBytes + item.bytes.count > maxShardBytes {
                shards.append(current)
                current = []
                currentBytes = 0
            }
            current.append(item)
            currentBytes += item.bytes.count
        }
        if !current.isEmpty || shards.isEmpty { shards.append(current) }
        return shards
    }

    // MARK: Reading

    /// Opens weights at `url`: a `.safetensors` file, a `.safetensors.index.json`,
    /// or a folder holding `<baseName>.safetensors` or, failing that,
    /// `<baseName>.safetensors.index.json` (Hugging Face's order of preference).
    public static func open(_ url: URL, baseName: String = "model") throws -> SafeTensorsArchive {
        if FileIO.isDirectory(url) {
            let single = url.appendingPathComponent("\(baseName).safetensors")
            let index = url.appendingPathComponent("\(baseName).safetensors.index.json")
            if FileIO.isFile(single) { return try SafeTensorsArchive(file: SafeTensorsFile(contentsOf: single)) }
            if FileIO.isFile(index) { return try SafeTensorsArchive(index: index) }
            throw TwoBPError("no \(baseName).safetensors or \(baseName).safetensors.index.json in \(url.path)")
        }
        if url.lastPathComponent.hasSuffix(".index.json") { return try SafeTensorsArchive(index: url) }
        return try SafeTensorsArchive(file: SafeTensorsFile(contentsOf: url))
    }
}

/// One validated safetensors file. Opening checks the whole header against the
/// file (lengths, JSON, dtypes, shapes, offsets: contiguous, in bounds, no
/// overlap, every data byte owned by exactly one tensor); tensors are copied out
/// of the (memory-mapped) bytes on request.
public struct SafeTensorsFile {
    /// The path (or description) used in error messages.
    public let source: String
    public let metadata: [String: String]
    /// Header entries in data order.
    public let entries: [SafeTensorsEntry]
    private let entryIndex: [String: Int]
    private let bytes: Data
    private let dataStart: Int

    public init(contentsOf url: URL) throws {
        try self.init(bytes: FileIO.read(url, what: "safetensors file"), source: url.path)
    }

    public init(bytes: Data, source: String) throws {
        func fail(_ what: String) -> TwoBPError { TwoBPError("safetensors file \(source): \(what)") }
        self.source = source
        self.bytes = bytes
        let fileSize = bytes.count
        guard fileSize >= 8 else { throw fail("only \(fileSize) bytes, too short for the 8-byte header length") }
        let headerLength = bytes.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        guard headerLength <= UInt64(fileSize - 8) else {
            throw fail("header length \(headerLength) runs past the end of the file (\(fileSize) bytes)")
        }
        guard headerLength <= UInt64(SafeTensors.maxHeaderBytes) else {
            throw fail("header length \(headerLength) exceeds the \(SafeTensors.maxHeaderBytes)-byte limit")
        }
        let dataStart = 8 + Int(headerLength)
        self.dataStart = dataStart
        let headerBytes = bytes.withUnsafeBytes { Array($0[8..<dataStart]) }
        guard headerBytes.first == UInt8(ascii: "{") else { throw fail("header does not start with '{'") }
        guard String(validating: headerBytes, as: UTF8.self) != nil else { throw fail("header is not valid UTF-8") }
        let header: ParsedHeader
        do {
            header = try JSONDecoder().decode(ParsedHeader.self, from: Data(headerBytes))
        } catch let error as TwoBPError {
            throw fail(error.message)
        } catch let error as DecodingError {
            throw fail("header is not valid JSON (\(error.summary))")
        }
        let metadata = header.metadata
        var entries = header.entries

        // Every byte of the data section belongs to exactly one tensor, in order.
        let dataSize = fileSize - dataStart
        entries.sort { ($0.dataOffsets.lowerBound, $0.dataOffsets.upperBound) < ($1.dataOffsets.lowerBound, $1.dataOffsets.upperBound) }
        var end = 0
        var previous: String?
        for entry in entries {
            let range = entry.dataOffsets
            guard range.upperBound <= dataSize else {
                throw fail("tensor '\(entry.name)' data_offsets [\(range.lowerBound), \(range.upperBound)] lie outside the file's \(dataSize) data bytes")
            }
            if range.lowerBound < end {
                throw fail("tensor '\(entry.name)' data_offsets [\(range.lowerBound), \(range.upperBound)] overlap tensor '\(previous ?? "")'")
            }
            if range.lowerBound > end {
                throw fail("bytes \(end)..<\(range.lowerBound) of the data belong to no tensor (before '\(entry.name)')")
            }
            end = range.upperBound
            previous = entry.name
        }
        guard end == dataSize else {
            throw fail("\(dataSize - end) bytes after the last tensor belong to no tensor")
        }
        self.metadata = metadata
        self.entries = entries
        entryIndex = Dictionary(uniqueKeysWithValues: entries.enumerated().map { ($1.name, $0) })
    }

    /// Tensor names in data order.
    public var names: [String] { entries.map(\.name) }

    public func entry(_ name: String) -> SafeTensorsEntry? {
        entryIndex[name].map { entries[$0] }
    }

    /// The entry `name`, checked to be loadable as Float32 and, when `shape` is
    /// given, to have that shape; throws naming this file otherwise.
    public func loadableEntry(_ name: String, shape: [Int]? = nil) throws -> SafeTensorsEntry {
        guard let entry = entry(name) else { throw TwoBPError("safetensors file \(source): missing tensor '\(name)'") }
        if let shape, entry.shape != shape {
            throw TwoBPError("safetensors file \(source): tensor '\(name)' has shape \(entry.shape), expected \(shape)")
        }
        guard entry.dtype.isLoadable else {
            throw TwoBPError("safetensors file \(source): tensor '\(name)' has dtype \(entry.dtype.rawValue), which cannot be loaded as Float32 (F32, F16, BF16 and F64 can)")
        }
        return entry
    }

    /// A new Float32 tensor with the stored values (and shape, which must equal `shape` when given).
    public func tensor(_ name: String, shape: [Int]? = nil) throws -> Tensor {
        let entry = try loadableEntry(name, shape: shape)
        let result = Tensor(zeros: entry.shape)
        copy(entry, into: result.pointer)
        return result
    }

    /// Copies the tensor `name` into `destination`, whose shape must match the stored one.
    public func copy(_ name: String, into destination: Tensor) throws {
        copy(try loadableEntry(name, shape: destination.shape), into: destination.pointer)
    }

    /// Every tensor, in data order, as records owning copies of their bytes in their own dtypes
    /// (to write what was gathered from other ranks into a checkpoint unchanged).
    public func storedTensors() -> [StoredTensor] {
        bytes.withUnsafeBytes { raw in
            entries.map { entry in
                StoredTensor(name: entry.name, dtype: entry.dtype, shape: entry.shape, copying: UnsafeRawBufferPointer(
                    rebasing: raw[(dataStart + entry.dataOffsets.lowerBound)..<(dataStart + entry.dataOffsets.upperBound)]))
            }
        }
    }

    /// Copies the tensor named as `buffer` into it; shape and dtype must be the buffer's.
    public func copy(into buffer: Buffer) throws {
        guard let entry = entry(buffer.name) else { throw TwoBPError("safetensors file \(source): missing tensor '\(buffer.name)'") }
        let dtype: SafeTensorsDType = buffer.dtype == .float32 ? .f32 : .i64
        guard entry.shape == buffer.shape, entry.dtype == dtype else {
            throw TwoBPError("safetensors file \(source): tensor '\(buffer.name)' is \(entry.dtype.rawValue) \(entry.shape), expected \(dtype.rawValue) \(buffer.shape)")
        }
        bytes.withUnsafeBytes { raw in
            buffer.bytes.copyMemory(from: UnsafeRawBufferPointer(
                rebasing: raw[(dataStart + entry.dataOffsets.lowerBound)..<(dataStart + entry.dataOffsets.upperBound)]))
        }
    }

    /// Converts `entry`'s bytes (a loadable dtype) into `destination`.
    private func copy(_ entry: SafeTensorsEntry, into destination: UnsafeMutablePointer<Float>) {
        let count = entry.elementCount
        bytes.withUnsafeBytes { raw in
            let source = UnsafeRawBufferPointer(rebasing: raw[(dataStart + entry.dataOffsets.lowerBound)..<(dataStart + entry.dataOffsets.upperBound)])
            switch entry.dtype {
            case .f32:
                UnsafeMutableRawPointer(destination).copyMemory(from: source.baseAddress!, byteCount: source.count)
            case .f64:
                for i in 0..<count {
                    destination[i] = Float(Double(bitPattern: UInt64(littleEndian: source.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self))))
                }
            case .bf16:
                for i in 0..<count {
                    destination[i] = Float(bitPattern: UInt32(UInt16(littleEndian: source.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) << 16)
                }
            case .f16:
                for i in 0..<count {
                    destination[i] = halfToFloat(UInt16(littleEndian: source.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
                }
            default:
                preconditionFailure("loadableEntry admits only F32, F64, BF16 and F16")
            }
        }
    }
}

/// IEEE 754 binary16 to Float32 (portable: `Float16` is missing on some platforms).
func halfToFloat(_ half: UInt16) -> Float {
    let sign: Float = half & 0x8000 == 0 ? 1 : -1
    let exponent = Int((half >> 10) & 0x1F)
    let mantissa = UInt32(half & 0x3FF)
    switch exponent {
    case 0: return sign * Float(mantissa) * 0x1p-24
    case 31: return mantissa == 0 ? sign * .infinity : .nan
    default:
        return Float(bitPattern: (half & 0x8000 == 0 ? 0 : 0x8000_0000) | UInt32(exponent - 15 + 127) << 23 | mantissa << 13)
    }
}

/// Named tensors spread over one or more safetensors files: a single file, or
/// the shards an index's `weight_map` names. Lookups say which file lacks what.
public struct SafeTensorsArchive {
    /// The file or index this archive was opened from (for messages).
    public let source: String
    public let files: [SafeTensorsFile]
    /// Tensor names: data order for a single file, `weight_map` order for an index.
    public let names: [String]
    private let location: [String: Int]

    public init(file: SafeTensorsFile) {
        source = file.source
        files = [file]
        names = file.names
        location = Dictionary(uniqueKeysWithValues: file.names.map { ($0, 0) })
    }

    /// Several files read as one, such as each pipeline rank's tensors gathered onto rank 0.
    /// A name present in two files is an error.
    public init(files: [SafeTensorsFile], source: String) throws {
        var location: [String: Int] = [:]
        for (index, file) in files.enumerated() {
            for name in file.names {
                guard location.updateValue(index, forKey: name) == nil else {
                    throw TwoBPError("\(source): tensor '\(name)' appears in two files")
                }
            }
        }
        self.source = source
        self.files = files
        names = files.flatMap(\.names)
        self.location = location
    }

    /// Opens `<name>.safetensors.index.json` and every shard it names; each name in
    /// `weight_map` must be in the shard it points to.
    public init(index url: URL) throws {
        func fail(_ what: String) -> TwoBPError { TwoBPError("safetensors index \(url.path): \(what)") }
        let index: ShardIndex
        do {
            index = try JSONDecoder().decode(ShardIndex.self, from: FileIO.read(url, what: "safetensors index"))
        } catch let error as DecodingError {
            if case .keyNotFound = error { throw fail("no \"weight_map\" object") }
            if case .typeMismatch = error { throw fail("no \"weight_map\" object of tensor names and file names") }
            throw fail("not valid JSON (\(error.summary))")
        }
        let weightMap = index.weightMap.sorted { $0.key < $1.key }
        let folder = url.deletingLastPathComponent()
        var files: [SafeTensorsFile] = []
        var fileIndex: [String: Int] = [:]
        var location: [String: Int] = [:]
        for (name, fileName) in weightMap {
            guard !fileName.isEmpty, !fileName.contains("/"), fileName != "..", fileName != "." else {
                throw fail("weight_map entry '\(name)' names '\(fileName)', which is not a file in the index's folder")
            }
            let index: Int
            if let known = fileIndex[fileName] {
                index = known
            } else {
                index = files.count
                files.append(try SafeTensorsFile(contentsOf: folder.appendingPathComponent(fileName)))
                fileIndex[fileName] = index
            }
            guard files[index].entry(name) != nil else {
                throw fail("weight_map puts '\(name)' in \(fileName), which does not contain it")
            }
            location[name] = index
        }
        source = url.path
        self.files = files
        names = weightMap.map(\.key)
        self.location = location
    }

    /// The first file's `__metadata__` (shards written together share it).
    public var metadata: [String: String] { files.first?.metadata ?? [:] }

    public func contains(_ name: String) -> Bool { location[name] != nil }

    public func entry(_ name: String) -> SafeTensorsEntry? {
        location[name].flatMap { files[$0].entry(name) }
    }

    /// `SafeTensorsFile.loadableEntry` in the file holding `name`.
    public func loadableEntry(_ name: String, shape: [Int]? = nil) throws -> SafeTensorsEntry {
        try fileHolding(name).loadableEntry(name, shape: shape)
    }

    /// A new Float32 tensor; when `shape` is given, the stored shape must equal it.
    public func tensor(_ name: String, shape: [Int]? = nil) throws -> Tensor {
        try fileHolding(name).tensor(name, shape: shape)
    }

    /// Copies `name` into `destination` (shapes must match).
    public func copy(_ name: String, into destination: Tensor) throws {
        try fileHolding(name).copy(name, into: destination)
    }

    /// Fills each parameter's value and each buffer from the tensor of the same name. The archive
    /// may hold more (other stages' state); a missing one is an error.
    public func load(into parameters: [Parameter], buffers: [Buffer] = []) throws {
        for parameter in parameters {
            try copy(parameter.name, into: parameter.value)
        }
        for buffer in buffers {
            try fileHolding(buffer.name).copy(into: buffer)
        }
    }

    private func fileHolding(_ name: String) throws -> SafeTensorsFile {
        guard let index = location[name] else { throw TwoBPError("\(source): missing tensor '\(name)'") }
        return files[index]
    }
}
