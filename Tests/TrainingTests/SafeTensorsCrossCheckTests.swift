import Foundation
import Layers
import Tensor
import Training
import XCTest
import Checkpoints

/// TwoBP's safetensors against the reference implementation, both ways: Python's
/// `safetensors` (installed by scripts/install-deps.sh) writes files for Swift to
/// read, and reads back the files Swift writes (scripts/safetensors_crosscheck.py).
final class SafeTensorsCrossCheckTests: XCTestCase {
    /// Mirrors SWIFT_TENSORS in scripts/safetensors_crosscheck.py.
    static let swiftTensors: [NamedTensor] = [
        (name: "model.layers.0.self_attn.q_proj.weight", tensor: ramp([4, 3], start: 0, step: 0.25)),
        (name: "model.norm.weight", tensor: ramp([3], start: 1, step: 0.25)),
        (name: "lm_head.weight", tensor: ramp([5, 3], start: -2, step: 0.5)),
    ]

    /// Mirrors SWIFT_BUFFERS: a float32 statistic and an int64 counter.
    static let swiftBuffers: [Buffer] = {
        let variance = Buffer(name: "bn1.running_var", shape: [2], dtype: .float32)
        variance.floats.update(from: [1, 1.5])
        let count = Buffer(name: "bn1.num_batches_tracked", shape: [], dtype: .int64)
        count.integers[0] = 1 << 40 + 7
        return [variance, count]
    }()

    func testAgainstPythonSafetensors() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("twobp-crosscheck-\(UUID().uuidString)")
        addTeardownBlock { try? FileManager.default.removeItem(at: folder) }
        try runCrossCheckScript("write", folder)
        let python = try SafeTensors.open(folder.appendingPathComponent("python.safetensors"))
        XCTAssertEqual(python.metadata, ["format": "pt", "writer": "python"])
        XCTAssertEqual(try python.tensor("a", shape: [3, 4]).toArray(), ramp([3, 4], start: -3, step: 0.5).toArray())
        XCTAssertEqual(try python.tensor("h").toArray(), [1, -2, 0.5, 65504, 0x1p-24])
        XCTAssertEqual(try python.tensor("d", shape: [2, 2]).toArray(), [0, 0.1, 0.2, 0.3].map { Float($0 as Double) })
        XCTAssertEqual(try python.tensor("empty").shape, [0, 3])

        let sharded = try SafeTensors.open(folder.appendingPathComponent("python-sharded"))
        XCTAssertEqual(sharded.files.count, 2)
        XCTAssertEqual(try sharded.tensor("x.weight").toArray(), [0, 1, 2, 3])
        XCTAssertEqual(try sharded.tensor("y.weight").toArray(), [10, 9, 8])
        XCTAssertEqual(try sharded.tensor("z.bias").toArray(), [7])

        let counter = Buffer(name: "counter", shape: [], dtype: .int64)
        try python.load(into: [], buffers: [counter])
        XCTAssertEqual(counter.integers[0], -3, "Python's I64 scalar")

        try SafeTensors.write(Self.swiftTensors, buffers: Self.swiftBuffers, to: folder.appendingPathComponent("swift.safetensors"))
        try SafeTensors.writeSharded([[Self.swiftTensors[0]], Array(Self.swiftTensors[1...])],
                                     to: folder.appendingPathComponent("swift-sharded"))
        try runCrossCheckScript("verify", folder)
    }

    /// Runs scripts/safetensors_crosscheck.py MODE FOLDER with python3 and fails on a non-zero exit.
    func runCrossCheckScript(_ mode: String, _ folder: URL) throws {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("scripts/safetensors_crosscheck.py")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", script.path, mode, folder.path]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0,
                       "python3 \(script.lastPathComponent) \(mode) failed (scripts/install-deps.sh installs safetensors and numpy):\n\(text)")
    }
}
