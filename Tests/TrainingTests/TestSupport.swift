import Foundation
import Tensor
import XCTest
import Checkpoints

/// A fresh temporary folder, removed when the test ends.
func temporaryFolder(_ test: XCTestCase) throws -> URL {
    let url = FileManager.default.temporaryDirectory
        .appendingPathComponent("twobp-training-tests-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    test.addTeardownBlock { try? FileManager.default.removeItem(at: url) }
    return url
}

/// Asserts that `body` throws a TwoBPError whose message contains every one of `fragments`.
func assertTwoBPError<T>(_ fragments: String..., file: StaticString = #filePath, line: UInt = #line,
                         _ body: () throws -> T) {
    do {
        _ = try body()
        XCTFail("expected a TwoBPError containing \(fragments)", file: file, line: line)
    } catch let error as TwoBPError {
        for fragment in fragments where !error.message.contains(fragment) {
            XCTFail("error \"\(error.message)\" does not contain \"\(fragment)\"", file: file, line: line)
        }
    } catch {
        XCTFail("expected a TwoBPError, got \(error)", file: file, line: line)
    }
}

/// A tensor of `shape` with values start, start + step, ... (exactly representable for small counts).
func ramp(_ shape: [Int], start: Float = 0, step: Float = 0.25) -> Tensor {
    let count = shape.reduce(1, *)
    return Tensor(shape: shape, values: (0..<count).map { start + Float($0) * step })
}

/// Bytes of a safetensors file assembled by hand: `headerLength` (default: the
/// header's real length), the header text, then `data`.
func rawSafeTensors(header: String, data: [UInt8], headerLength: UInt64? = nil) -> Data {
    var bytes = [UInt8]()
    withUnsafeBytes(of: (headerLength ?? UInt64(header.utf8.count)).littleEndian) { bytes.append(contentsOf: $0) }
    bytes.append(contentsOf: header.utf8)
    bytes.append(contentsOf: data)
    return Data(bytes)
}

func floatBytes(_ values: [Float]) -> [UInt8] {
    values.withUnsafeBytes { Array($0) }
}
