import Foundation
import Layers
import Tensor

#if _endian(big)
#error("safetensors data is little-endian; SafeTensorsFile copies it without byte swapping")
#endif

/// A tensor with its checkpoint name, e.g. `model.layers.0.self_attn.q_proj.weight`.
public typealias NamedTensor = (name: String, tensor: Tensor)

/// Element types the safetensors format defines. TwoBP writes `F32` and reads
/// `F32`, `F16`, `BF16` and `F64` (converted to Float32); the others are known,
/// so their sizes validate, but cannot be loaded as tensors.
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

    /// Writes `tensors` as F32 to `url` (fsynced before returning).
    public static func write(_ tensors: [NamedTensor], to url: URL,
                             metadata: [String: String] = defaultMetadata) throws {
        let header = try encodeHeader(tensors, metadata: metadata)
        try FileIO.writeDurably(url) { sink in
            try header.withUnsafeBytes { try sink.write($0) }
            for (_, tensor) in tensors {
                try sink.write(UnsafeRawBufferPointer(start: tensor.pointer, count: tensor.count * MemoryLayout<Float>.stride))
            }
        }
    }

    /// The bytes of a safetensors file holding `tensors` as F32 (for sending a
    /// stage's weights to another rank, or for tests).
    public static func encode(_ tensors: [NamedTensor], metadata: [String: String] = defaultMetadata) throws -> [UInt8] {
        var bytes = try encodeHeader(tensors, metadata: metadata)
        for (_, tensor) in tensors {
            bytes.append(contentsOf: UnsafeRawBufferPointer(start: tensor.pointer, count: tensor.count * MemoryLayout<Float>.stride))
        }
        return bytes
    }

    /// The 8-byte length and the space-padded JSON header for `tensors`, laid out in order.
    static func encodeHeader(_ tensors: [NamedTensor], metadata: [String: String]) throws -> [UInt8] {
        var pairs: [(key: String, value: JSONValue)] = []
        if !metadata.isEmpty {
            pairs.append((key: "__metadata__", value: .object(metadata.sorted { $0.key < $1.key }.map { (key: $0.key, value: .string($0.value)) })))
        }
        var seen = Set<String>()
        var offset = 0
        for (name, tensor) in tensors {
            guard name != "__metadata__" else { throw TwoBPError("a tensor cannot be named __metadata__") }
            guard seen.insert(name).inserted else { throw TwoBPError("tensor name '\(name)' appears twice in one safetensors file") }
            let size = tensor.count * MemoryLayout<Float>.stride
            pairs.append((key: name, value: [
                "dtype": .string(SafeTensorsDType.f32.rawValue),
                "shape": .array(tensor.shape.map { .int($0) }),
                "data_offsets": [.int(offset), .int(offset + size)],
            ]))
            offset += size
        }
        var json = Array(JSONValue.object(pairs).encoded().utf8)
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
    public static func writeSharded(_ shards: [[NamedTensor]], to directory: URL, baseName: String = "model",
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
        var files: [(file: String, tensors: [NamedTensor])] = []
        var written: [URL] = []
        for (i, shard) in shards.enumerated() {
            let name = shardFileName(baseName: baseName, index: i, count: shards.count)
            let url = directory.appendingPathComponent(name)
            try write(shard, to: url, metadata: metadata)
            files.append((name, shard))
            written.append(url)
        }
        try writeIndex(files.map { file in (file.file, file.tensors.map { ($0.name, $0.tensor.count * MemoryLayout<Float>.stride) }) },
                       to: directory, baseName: baseName)
        try FileIO.remove(single)
        return written + [index]
    }

    /// Writes `<baseName>.safetensors.index.json` for shards already in `directory`: for each
    /// shard file, the names and data bytes of its tensors. A name in two shards is an error.
    public static func writeIndex(_ shards: [(file: String, tensors: [(name: String, bytes: Int)])], to directory: URL,
                                  baseName: String = "model") throws {
        var weightMap: [(key: String, value: JSONValue)] = []
        var seen = Set<String>()
        var totalSize = 0
        for shard in shards {
            for tensor in shard.tensors {
                guard seen.insert(tensor.name).inserted else {
                    throw TwoBPError("tensor name '\(tensor.name)' appears in two shards")
                }
                weightMap.append((key: tensor.name, value: .string(shard.file)))
                totalSize += tensor.bytes
            }
        }
        weightMap.sort { $0.key < $1.key }
        let indexJSON: JSONValue = ["metadata": ["total_size": .int(totalSize)], "weight_map": .object(weightMap)]
        try FileIO.writeDurably(directory.appendingPathComponent("\(baseName).safetensors.index.json"), text: indexJSON.prettyEncoded())
    }

    /// Splits `tensors`, in order, into shards of at most `maxShardBytes` of data
    /// each (a larger tensor gets a shard of its own), as `save_pretrained` does.
    public static func partition(_ tensors: [NamedTensor], maxShardBytes: Int) -> [[NamedTensor]] {
        var shards: [[NamedTensor]] = []
        var current: [NamedTensor] = []
        var currentBytes = 0
        for item in tensors {
            let size = item.tensor.count * MemoryLayout<Float>.stride
            if !current.isEmpty && currentBytes + size > maxShardBytes {
                shards.append(current)
                current = []
                currentBytes = 0
            }
            current.append(item)
            currentBytes += size
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
        let header: JSONValue
        do {
            header = try JSONValue.parse(headerBytes)
        } catch let error as TwoBPError {
            throw fail("header is not valid JSON (\(error.message))")
        }
        guard let pairs = header.objectValue else { throw fail("header is not a JSON object") }

        var metadata: [String: String] = [:]
        var entries: [SafeTensorsEntry] = []
        for (name, value) in pairs {
            if name == "__metadata__" {
                guard let items = value.objectValue else { throw fail("__metadata__ is not an object") }
                for (key, item) in items {
                    guard let text = item.stringValue else { throw fail("__metadata__ value of '\(key)' is not a string") }
                    metadata[key] = text
                }
                continue
            }
            entries.append(try SafeTensorsFile.entry(name: name, value: value, fail: fail))
        }

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

    private static func entry(name: String, value: JSONValue, fail: (String) -> TwoBPError) throws -> SafeTensorsEntry {
        guard value.objectValue != nil else { throw fail("entry '\(name)' is not an object") }
        guard let dtypeName = value["dtype"]?.stringValue else { throw fail("tensor '\(name)' has no dtype string") }
        guard let dtype = SafeTensorsDType(rawValue: dtypeName) else {
            throw fail("tensor '\(name)' has unknown dtype \(dtypeName)")
        }
        guard let shapeValues = value["shape"]?.arrayValue else { throw fail("tensor '\(name)' has no shape array") }
        var shape: [Int] = []
        var elements = 1
        for dimension in shapeValues {
            guard let d = dimension.intValue, d >= 0 else {
                throw fail("tensor '\(name)' has an invalid dimension \(dimension.encoded()) in its shape")
            }
            let (product, overflow) = elements.multipliedReportingOverflow(by: d)
            guard !overflow else { throw fail("tensor '\(name)' shape \(shapeValues.map { $0.encoded() }) is too large") }
            shape.append(d)
            elements = product
        }
        guard let offsets = value["data_offsets"]?.arrayValue, offsets.count == 2,
              let begin = offsets[0].intValue, let end = offsets[1].intValue, begin >= 0, begin <= end
        else {
            throw fail("tensor '\(name)' needs data_offsets [begin, end] with 0 <= begin <= end")
        }
        let (bytes, overflow) = elements.multipliedReportingOverflow(by: dtype.byteSize)
        guard !overflow, bytes == end - begin else {
            throw fail("tensor '\(name)' data_offsets [\(begin), \(end)] hold \(end - begin) bytes, but shape \(shape) of \(dtype.rawValue) needs \(overflow ? "more" : String(bytes))")
        }
        return SafeTensorsEntry(name: name, dtype: dtype, shape: shape, dataOffsets: begin..<end)
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
        let json: JSONValue
        do {
            json = try JSONValue.parse(FileIO.read(url, what: "safetensors index"))
        } catch let error as TwoBPError where error.message.hasPrefix("invalid JSON") {
            throw fail("not valid JSON (\(error.message))")
        }
        guard let weightMap = json["weight_map"]?.objectValue else { throw fail("no \"weight_map\" object") }
        let folder = url.deletingLastPathComponent()
        var files: [SafeTensorsFile] = []
        var fileIndex: [String: Int] = [:]
        var location: [String: Int] = [:]
        for (name, value) in weightMap {
            guard let fileName = value.stringValue else { throw fail("weight_map entry '\(name)' is not a file name") }
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

    /// Fills each parameter's value from the tensor of the same name. The archive
    /// may hold more (other stages' parameters); a missing one is an error.
    public func load(into parameters: [Parameter]) throws {
        for parameter in parameters {
            try copy(parameter.name, into: parameter.value)
        }
    }

    private func fileHolding(_ name: String) throws -> SafeTensorsFile {
        guard let index = location[name] else { throw TwoBPError("\(source): missing tensor '\(name)'") }
        return files[index]
    }
}
