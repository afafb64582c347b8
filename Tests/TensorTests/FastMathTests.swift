import Foundation
import Tensor
import XCTest

/// FastMath.exp, used by softmax and SiLU, against Foundation's exp over Float's whole finite range.
final class FastMathTests: XCTestCase {
    func testFastExpIsWithinAMillionthOfExp() {
        var worst = 0.0
        var worstX: Float = 0
        var x: Float = -87.3
        while x < 88.3 {
            let got = Double(FastMath.exp(x))
            let want = Foundation.exp(Double(x))
            let error = abs(got - want) / want
            if error > worst { worst = error; worstX = x }
            x += 0.000731
        }
        XCTAssertLessThan(worst, 1e-6, "worst relative error at \(worstX)")
        XCTAssertEqual(FastMath.exp(0), 1)
        XCTAssertLessThan(FastMath.exp(-1000), 1e-37)
        XCTAssertTrue(FastMath.exp(1000).isFinite)
    }
}
