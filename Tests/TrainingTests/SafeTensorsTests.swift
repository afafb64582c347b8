import Foundation
import Layers
import Tensor
@testable import Training
import XCTest
@testable import Checkpoints

final class SafeTensorsTests: XCTestCase {
    let weights: [NamedTensor] = [
        (name: "model.layers.0.self_attn.q_proj.weight", tensor: ramp([4, 3])),
        (name: "model.norm.weight", tensor: ramp([3], start: 1)),
        (name: "lm_head.weight", tensor: ramp([5, 3], start: -2, step: 0.5)),
    ]

    func assertSame(_ archive: SafeTensorsArchive, _ expected: [NamedTensor], file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertEqual(Set(archive.names), Set(expected.map(\.name)), file: file, line: line)
        for (name, tensor) in expected {
            let loaded = try archive.tensor(name)
            XCTAssertEqual(loaded.shape, tensor.shape, name, file: file, line: line)
            XCTAssertEqual(loaded.toArray(), tensor.toArray(), name, file: file, line: line)
        }
    }

    func testSingleFileRoundTripAndLayout() throws {
        let url = try temporaryFolder(self).appendingPathComponent("model.safetensors")
        try SafeTensors.write(weights, to: url)
        let bytes = try Data(contentsOf: url)
        let headerLength = Int(bytes.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) })
        XCTAssertEqual((8 + headerLength) % 8, 0, "data must start 8-byte aligned")
        let header = String(decoding: bytes[8..<(8 + headerLength)], as: UTF8.self)
        // Keys sorted, so the same tensors always give the same bytes; the data keeps the given order.
        XCTAssertTrue(header.hasPrefix(#"{"__metadata__":{"format":"pt"},"lm_head.weight":{"data_offsets":[60,120],"dtype":"F32","shape":[5,3]},"model.layers.0.self_attn.q_proj.weight":{"data_offsets":[0,48],"dtype":"F32","shape":[4,3]}"#), header)
        XCTAssertEqual(bytes.count, 8 + headerLength + (12 + 3 + 15) * 4)
        // Data in order, raw little-endian F32.
        XCTAssertEqual(Array(bytes[(8 + headerLength)...]), floatBytes(weights.flatMap { $0.tensor.toArray() }))

        let archive = try SafeTensors.open(url)
        XCTAssertEqual(archive.metadata, ["format": "pt"])
        XCTAssertEqual(archive.names, weights.map(\.name))
        try assertSame(archive, weights)
        XCTAssertEqual(try SafeTensors.encode(weights), [UInt8](bytes), "encode and write produce the same bytes")
    }

    func testOverwritingAnOpenFileLeavesTheOpenArchiveValid() throws {
        let folder = try temporaryFolder(self)
        let url = folder.appendingPathComponent("model.safetensors")
        try SafeTensors.write(weights, to: url)
        let before = try SafeTensors.open(url)
        try SafeTensors.write([(name: "other", tensor: ramp([1000]))], to: url)
        XCTAssertEqual(try before.tensor("model.norm.weight").toArray(), [1, 1.25, 1.5], "the old file was replaced, not truncated")
        XCTAssertEqual(try SafeTensors.open(url).names, ["other"])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder.path), ["model.safetensors"], "no temporary file left")
    }

    func testLoadIntoParametersChecksNamesAndShapes() throws {
        let url = try temporaryFolder(self).appendingPathComponent("w.safetensors")
        try SafeTensors.write(weights, to: url)
        let archive = try SafeTensors.open(url)
        let norm = Parameter(name: "model.norm.weight", shape: [3])
        try archive.load(into: [norm])
        XCTAssertEqual(norm.value.toArray(), [1, 1.25, 1.5])
        assertTwoBPError("missing tensor 'model.embed_tokens.weight'") {
            try archive.load(into: [Parameter(name: "model.embed_tokens.weight", shape: [3])])
        }
        assertTwoBPError("tensor 'lm_head.weight' has shape [5, 3], expected [3, 5]") {
            try archive.load(into: [Parameter(name: "lm_head.weight", shape: [3, 5])])
        }
        assertTwoBPError("has shape [3], expected [4]") { try archive.tensor("model.norm.weight", shape: [4]) }
    }

    func testShardedRoundTripWritesHuggingFaceIndex() throws {
        let folder = try temporaryFolder(self)
        let shards = SafeTensors.partition(weights.map(StoredTensor.init), maxShardBytes: 60)
        XCTAssertEqual(shards.map { $0.map(\.name) }, [["model.layers.0.self_attn.q_proj.weight", "model.norm.weight"], ["lm_head.weight"]])
        let written = try SafeTensors.writeSharded(shards, to: folder)
        XCTAssertEqual(written.map(\.lastPathComponent),
                       ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json"])
        struct Index: Decodable {
            struct Metadata: Decodable { let total_size: Int }
            let metadata: Metadata
            let weight_map: [String: String]
        }
        let index = try JSONDecoder().decode(Index.self, from: Data(contentsOf: folder.appendingPathComponent("model.safetensors.index.json")))
        XCTAssertEqual(index.metadata.total_size, (12 + 3 + 15) * 4)
        XCTAssertEqual(index.weight_map.keys.sorted(), weights.map(\.name).sorted())
        XCTAssertEqual(index.weight_map["lm_head.weight"], "model-00002-of-00002.safetensors")

        for location in [folder, folder.appendingPathComponent("model.safetensors.index.json")] {
            let archive = try SafeTensors.open(location)
            XCTAssertEqual(archive.files.count, 2)
            try assertSame(archive, weights)
        }
        // A single shard is written as plain model.safetensors, and the stale index goes.
        try SafeTensors.writeSharded([weights], to: folder)
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder.appendingPathComponent("model.safetensors.index.json").path))
        let single = try SafeTensors.open(folder)
        XCTAssertEqual(single.files.count, 1)
        try assertSame(single, weights)
    }

    func testPartitionGivesAnOversizedTensorItsOwnShard() {
        let shards = SafeTensors.partition(weights.map(StoredTensor.init), maxShardBytes: 1)
        XCTAssertEqual(shards.map(\.count), [1, 1, 1])
        XCTAssertEqual(SafeTensors.partition([], maxShardBytes: 10).count, 1)
    }

    /// Buffers keep their own dtype: float32 statistics as F32, counters as I64.
    func testBuffersRoundTripInTheirOwnDTypes() throws {
        let url = try temporaryFolder(self).appendingPathComponent("state.safetensors")
        let mean = Buffer(name: "bn1.running_mean", shape: [3], dtype: .float32)
        mean.floats.update(from: [0.5, -1, 2])
        let count = Buffer(name: "bn1.num_batches_tracked", shape: [], dtype: .int64)
        count.integers[0] = 1 << 40 + 7
        try SafeTensors.write([weights[1]], buffers: [mean, count], to: url)
        let file = try SafeTensorsFile(contentsOf: url)
        XCTAssertEqual(file.entry("bn1.running_mean")?.dtype, .f32)
        XCTAssertEqual(file.entry("bn1.num_batches_tracked")?.dtype, .i64)
        XCTAssertEqual(file.entry("bn1.num_batches_tracked")?.shape, [])

        let (loadedMean, loadedCount) = (Buffer(name: mean.name, shape: [3], dtype: .float32), Buffer(name: count.name, shape: [], dtype: .int64))
        try SafeTensorsArchive(file: file).load(into: [], buffers: [loadedMean, loadedCount])
        XCTAssertEqual(Array(loadedMean.floats), [0.5, -1, 2])
        XCTAssertEqual(loadedCount.integers[0], 1 << 40 + 7)
        // Another dtype or shape is refused rather than converted.
        assertTwoBPError("is I64 [], expected F32 []") {
            try SafeTensorsArchive(file: file).load(into: [], buffers: [Buffer(name: count.name, shape: [], dtype: .float32)])
        }
        assertTwoBPError("expected I64 [2]") {
            try SafeTensorsArchive(file: file).load(into: [], buffers: [Buffer(name: count.name, shape: [2], dtype: .int64)])
        }
        // Gathered images carry them unchanged into a checkpoint's records.
        let records = file.storedTensors()
        XCTAssertEqual(records.map(\.dtype), [.f32, .f32, .i64])
        let copy = url.deletingLastPathComponent().appendingPathComponent("copy.safetensors")
        try SafeTensors.write(records, to: copy)
        XCTAssertEqual(try Data(contentsOf: copy), try Data(contentsOf: url), "rewriting the records gives the same file")
    }

    func testWriterRejectsDuplicateAndReservedNames() throws {
        let url = try temporaryFolder(self).appendingPathComponent("x.safetensors")
        assertTwoBPError("appears twice") { try SafeTensors.write([weights[0], weights[0]], to: url) }
        assertTwoBPError("__metadata__") { try SafeTensors.write([(name: "__metadata__", tensor: ramp([1]))], to: url) }
        assertTwoBPError("appears in two shards") {
            try SafeTensors.writeSharded([[weights[0]], [weights[0]]], to: url.deletingLastPathComponent())
        }
    }

    func testReadsHalfBFloatAndDoubleAsFloat() throws {
        // F16 1.0 = 0x3C00, -2.0 = 0xC000, 2^-24 (smallest subnormal) = 0x0001; BF16 1.5 = 0x3FC0; F64 0.1.
        let data: [UInt8] = [0x00, 0x3C, 0x00, 0xC0, 0x01, 0x00, 0xC0, 0x3F] + withUnsafeBytes(of: (0.1 as Double).bitPattern.littleEndian) { Array($0) }
        let header = #"{"h":{"dtype":"F16","shape":[3],"data_offsets":[0,6]},"b":{"dtype":"BF16","shape":[1],"data_offsets":[6,8]},"d":{"dtype":"F64","shape":[],"data_offsets":[8,16]}}"#
        let file = try SafeTensorsFile(bytes: rawSafeTensors(header: header, data: data), source: "mixed")
        XCTAssertEqual(try file.tensor("h").toArray(), [1, -2, 0x1p-24])
        XCTAssertEqual(try file.tensor("b").toArray(), [1.5])
        let scalar = try file.tensor("d")
        XCTAssertEqual(scalar.shape, [])
        XCTAssertEqual(scalar.toArray(), [Float(0.1)])
        XCTAssertEqual(halfToFloat(0x7C00), .infinity)
        XCTAssertEqual(halfToFloat(0x7BFF), 65504)
        XCTAssertTrue(halfToFloat(0x7E00).isNaN)
    }

    // MARK: Malformed files

    func open(_ data: Data) throws -> SafeTensorsFile {
        try SafeTensorsFile(bytes: data, source: "bad.safetensors")
    }

    let goodHeader = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#
    let goodData = floatBytes([1, 2, 3])

    func testWellFormedHandMadeFileOpens() throws {
        let file = try open(rawSafeTensors(header: goodHeader, data: goodData))
        XCTAssertEqual(try file.tensor("a").toArray(), [1, 2])
        XCTAssertEqual(try file.tensor("b").toArray(), [3])
    }

    func testRejectsFileShorterThanHeaderLength() {
        assertTwoBPError("bad.safetensors", "only 5 bytes") { try open(Data([1, 2, 3, 4, 5])) }
    }

    func testRejectsHeaderLengthBeyondFile() {
        assertTwoBPError("header length 1000 runs past the end of the file") {
            try open(rawSafeTensors(header: goodHeader, data: goodData, headerLength: 1000))
        }
        assertTwoBPError("runs past the end") {
            try open(rawSafeTensors(header: goodHeader, data: goodData, headerLength: UInt64.max))
        }
    }

    func testRejectsInvalidJSON() {
        assertTwoBPError("header is not valid JSON") {
            try open(rawSafeTensors(header: #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]"#, data: goodData))
        }
        assertTwoBPError("header does not start with '{'") { try open(rawSafeTensors(header: "[1,2]", data: [])) }
        // Two entries under one name: one is dropped, and the bytes it claimed belong to no tensor.
        assertTwoBPError("belong to no tensor") {
            try open(rawSafeTensors(header: #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, data: floatBytes([1, 2])))
        }
        assertTwoBPError("not valid UTF-8") {
            var data = rawSafeTensors(header: #"{"a\#u{e9}":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, data: floatBytes([1]))
            data[11] = 0xFF  // inside the name: invalid UTF-8
            return try open(data)
        }
    }

    func testRejectsOffsetsOutsideTheFile() {
        let header = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#
        assertTwoBPError("tensor 'b'", "outside the file's 10 data bytes") {
            try open(rawSafeTensors(header: header, data: Array(goodData.prefix(10))))
        }
    }

    func testRejectsOverlappingOffsets() {
        let header = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#
        assertTwoBPError("overlap tensor 'a'") { try open(rawSafeTensors(header: header, data: goodData)) }
    }

    func testRejectsGapsAndTrailingBytes() {
        let gap = #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#
        assertTwoBPError("bytes 4..<8 of the data belong to no tensor") { try open(rawSafeTensors(header: gap, data: goodData)) }
        assertTwoBPError("4 bytes after the last tensor") {
            try open(rawSafeTensors(header: goodHeader, data: goodData + floatBytes([9])))
        }
    }

    func testRejectsOffsetsInconsistentWithShape() {
        let header = #"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#
        assertTwoBPError("tensor 'a' data_offsets [0, 8] hold 8 bytes, but shape [3] of F32 needs 12") {
            try open(rawSafeTensors(header: header, data: goodData))
        }
        let reversed = #"{"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}"#
        assertTwoBPError("0 <= begin <= end") { try open(rawSafeTensors(header: reversed, data: goodData)) }
        let negative = #"{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#
        assertTwoBPError("invalid dimension -2") { try open(rawSafeTensors(header: negative, data: goodData)) }
        let huge = #"{"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8]}}"#
        assertTwoBPError("too large") { try open(rawSafeTensors(header: huge, data: goodData)) }
    }

    func testRejectsUnknownDTypeAtOpenAndUnloadableDTypeOnAccess() throws {
        let unknown = #"{"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#
        assertTwoBPError("tensor 'a' has unknown dtype Q4") { try open(rawSafeTensors(header: unknown, data: goodData)) }
        let integer = #"{"a":{"dtype":"I32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#
        let file = try open(rawSafeTensors(header: integer, data: goodData))
        XCTAssertEqual(try file.tensor("b").toArray(), [3], "the loadable tensor still loads")
        assertTwoBPError("tensor 'a' has dtype I32, which cannot be loaded as Float32") { try file.tensor("a") }
    }

    func testRejectsMalformedEntriesAndMetadata() {
        assertTwoBPError("tensor 'a' has no dtype") {
            try open(rawSafeTensors(header: #"{"a":{"shape":[1],"data_offsets":[0,4]}}"#, data: floatBytes([1])))
        }
        assertTwoBPError("__metadata__ value of 'format' is not a string") {
            try open(rawSafeTensors(header: #"{"__metadata__":{"format":1}}"#, data: []))
        }
        assertTwoBPError("entry 'a' is not an object") { try open(rawSafeTensors(header: #"{"a":3}"#, data: [])) }
    }

    func testMissingTensorAndWrongShape() throws {
        let file = try open(rawSafeTensors(header: goodHeader, data: goodData))
        assertTwoBPError("bad.safetensors: missing tensor 'c'") { try file.tensor("c") }
        assertTwoBPError("tensor 'a' has shape [2], expected [1, 2]") { try file.copy("a", into: Tensor(zeros: [1, 2])) }
    }

    func testOpenReportsMissingFilesAndFolders() throws {
        let folder = try temporaryFolder(self)
        assertTwoBPError("safetensors file", "not found") { try SafeTensors.open(folder.appendingPathComponent("none.safetensors")) }
        assertTwoBPError("no model.safetensors or model.safetensors.index.json in") { try SafeTensors.open(folder) }
    }

    func testRejectsBrokenIndexes() throws {
        let folder = try temporaryFolder(self)
        try SafeTensors.writeSharded([[weights[0]], [weights[1], weights[2]]], to: folder)
        let index = folder.appendingPathComponent("model.safetensors.index.json")
        let wrongFile = #"{"weight_map":{"model.norm.weight":"model-00001-of-00002.safetensors"}}"#
        try wrongFile.write(to: index, atomically: true, encoding: .utf8)
        assertTwoBPError("puts 'model.norm.weight' in model-00001-of-00002.safetensors, which does not contain it") { try SafeTensors.open(folder) }

        try #"{"weight_map":{"lm_head.weight":"model-00009-of-00009.safetensors"}}"#.write(to: index, atomically: true, encoding: .utf8)
        assertTwoBPError("model-00009-of-00009.safetensors not found") { try SafeTensors.open(folder) }

        try #"{"weight_map":{"lm_head.weight":"../model-00002-of-00002.safetensors"}}"#.write(to: index, atomically: true, encoding: .utf8)
        assertTwoBPError("not a file in the index's folder") { try SafeTensors.open(folder) }

        try #"{"metadata":{}}"#.write(to: index, atomically: true, encoding: .utf8)
        assertTwoBPError("no \"weight_map\" object") { try SafeTensors.open(folder) }

        try #"{"weight_map":"#.write(to: index, atomically: true, encoding: .utf8)
        assertTwoBPError("safetensors index", "not valid JSON") { try SafeTensors.open(folder) }

        // A corrupt shard is reported under its own name.
        try SafeTensors.writeSharded([[weights[0]], [weights[1], weights[2]]], to: folder)
        try Data([1, 2, 3]).write(to: folder.appendingPathComponent("model-00002-of-00002.safetensors"))
        assertTwoBPError("model-00002-of-00002.safetensors: only 3 bytes") { try SafeTensors.open(folder) }
    }
}
