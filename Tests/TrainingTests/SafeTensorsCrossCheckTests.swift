import Foundation
import Tensor
import Training
import XCTest

/// The Swift half of scripts/crosscheck-safetensors.sh: reads the files Python's
/// `safetensors` wrote into $TWOBP_SAFETENSORS_CROSSCHECK and writes files for
/// Python to read back. Skipped when the variable is unset (plain `swift test`).
final class SafeTensorsCrossCheckTests: XCTestCase {
    /// Mirrors SWIFT_TENSORS in scripts/safetensors_crosscheck.py.
    static let swiftTensors: [NamedTensor] = [
        (name: "model.layers.0.self_attn.q_proj.weight", tensor: ramp([4, 3], start: 0, step: 0.25)),
        (name: "model.norm.weight", tensor: ramp([3], start: 1, step: 0.25)),
        (name: "lm_head.weight", tensor: ramp([5, 3], start: -2, step: 0.5)),
    ]

    func testAgainstPythonSafetensors() throws {
        guard let path = ProcessInfo.processInfo.environment["TWOBP_SAFETENSORS_CROSSCHECK"] else {
            throw XCTSkip("run scripts/crosscheck-safetensors.sh for the Python cross-check")
        }
        let folder = URL(fileURLWithPath: path)
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

        try SafeTensors.write(Self.swiftTensors, to: folder.appendingPathComponent("swift.safetensors"))
        try SafeTensors.writeSharded([[Self.swiftTensors[0]], Array(Self.swiftTensors[1...])],
                                     to: folder.appendingPathComponent("swift-sharded"))
    }
}
