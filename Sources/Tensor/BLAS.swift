import CBLAS

/// Matrix products through OpenBLAS 0.3.34 (PyPI's scipy-openblas32, symbols prefixed `scipy_`),
/// row-major, with transpose flags instead of copies.
public enum BLAS {
    /// OpenBLAS threads per process (the wheel does not export the per-thread
    /// `openblas_set_num_threads_local` its header declares). TwoBP runs cores / stages per
    /// pipeline stage, so stages do not fight over cores.
    public static func setThreads(_ count: Int) {
        scipy_openblas_set_num_threads(Int32(count))
    }

    /// The kernel OpenBLAS picked for this CPU (honours OPENBLAS_CORETYPE), for benchmark reports.
    public static var coreName: String {
        guard let name = scipy_openblas_get_corename() else { return "unknown" }
        return String(cString: name)
    }

    /// `C = alpha * op(A) * op(B) + beta * C` on row-major matrices, C being m x n and op(A) m x k.
    @inline(__always)
    public static func gemm(
        transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int,
        alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
        b: UnsafePointer<Float>, ldb: Int,
        beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        guard m > 0, n > 0 else { return }
        GEMMProfile.shared.measure(flops: 2 * Double(m) * Double(n) * Double(k)) {
            scipy_cblas_sgemm(
                CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
                Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
        }
    }

    /// 2-D product of tensors viewed as [rowCount, columnCount]:
    /// `c (+)= op(a) * op(b)`, accumulating when `accumulate` is set.
    public static func matmul(
        _ c: Tensor, _ a: Tensor, transposeA: Bool = false, _ b: Tensor, transposeB: Bool = false,
        accumulate: Bool = false
    ) {
        let (m, k) = transposeA ? (a.columnCount, a.rowCount) : (a.rowCount, a.columnCount)
        let (kb, n) = transposeB ? (b.columnCount, b.rowCount) : (b.rowCount, b.columnCount)
        precondition(k == kb && c.rowCount == m && c.columnCount == n,
                     "matmul: \(a.shape)\(transposeA ? "ᵀ" : "") x \(b.shape)\(transposeB ? "ᵀ" : "") into \(c.shape)")
        gemm(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k,
             a: a.pointer, lda: a.columnCount, b: b.pointer, ldb: b.columnCount,
             beta: accumulate ? 1 : 0, c: c.pointer, ldc: n)
    }
}
