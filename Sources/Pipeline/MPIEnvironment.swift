import CMPIShim
import Foundation
import Tensor

/// This process's place in an MPI job: initialization, rank and size, abort and finalize.
///
/// One pipeline stage runs per process. `MPIEnvironment.initialize()` calls
/// `MPI_Init_thread` requesting `MPI_THREAD_SERIALIZED`: MPI may then be called
/// from any thread as long as no two calls overlap. `MPITransport` guarantees
/// that with one lock, so the stage may run on a worker thread rather than the
/// main thread (FUNNELED would forbid that) without paying for
/// `MPI_THREAD_MULTIPLE`, which makes every Open MPI call take internal locks.
/// No helper thread polls MPI; progress is made whenever the transport is
/// called (see `MPITransport.progress()`).
///
/// MPI can be initialized once per process and never again after
/// `finalize()`, so the environment is a process-wide singleton.
///
/// ```swift
/// let mpi = try MPIEnvironment.initialize()
/// let transport = try MPITransport(environment: mpi)   // collective: every rank
/// ... run the stage on `transport` ...
/// try mpi.finalize()                                    // closes the transport first
/// ```
public final class MPIEnvironment: @unchecked Sendable {
    /// MPI's thread-support levels, in increasing order.
    public enum ThreadLevel: Int, Comparable, Sendable, CustomStringConvertible {
        case single, funneled, serialized, multiple

        init(mpiValue: Int32) {
            switch mpiValue {
            case twobp_mpi_thread_multiple(): self = .multiple
            case twobp_mpi_thread_serialized(): self = .serialized
            case twobp_mpi_thread_funneled(): self = .funneled
            default: self = .single
            }
        }

        var mpiValue: Int32 {
            switch self {
            case .single: return twobp_mpi_thread_single()
            case .funneled: return twobp_mpi_thread_funneled()
            case .serialized: return twobp_mpi_thread_serialized()
            case .multiple: return twobp_mpi_thread_multiple()
            }
        }

        public static func < (a: ThreadLevel, b: ThreadLevel) -> Bool { a.rawValue < b.rawValue }

        public var description: String {
            switch self {
            case .single: return "MPI_THREAD_SINGLE"
            case .funneled: return "MPI_THREAD_FUNNELED"
            case .serialized: return "MPI_THREAD_SERIALIZED"
            case .multiple: return "MPI_THREAD_MULTIPLE"
            }
        }
    }

    /// The level `initialize()` asks for.
    public static let requestedThreadLevel = ThreadLevel.serialized

    public let rank: Int
    public let worldSize: Int
    /// What the MPI library granted; `MPITransport` needs `serialized` to be called off the main thread.
    public let threadLevel: ThreadLevel
    /// `MPI_Get_processor_name`: usually the host name.
    public let processorName: String

    private let lock = NSLock()
    private var finalized = false
    private var transports: [WeakTransport] = []

    private struct WeakTransport {
        weak var transport: MPITransport?
    }

    private static let sharedLock = NSLock()
    private static var shared: MPIEnvironment?

    private init(rank: Int, worldSize: Int, threadLevel: ThreadLevel, processorName: String) {
        self.rank = rank
        self.worldSize = worldSize
        self.threadLevel = threadLevel
        self.processorName = processorName
    }

    // MARK: Launch detection

    /// Variables a launcher sets on every process it starts: Open MPI's mpirun
    /// (OMPI_COMM_WORLD_*, and PMIX_RANK as any PMIx launcher such as srun --mpi=pmix),
    /// MPICH's Hydra (PMI_*) and MVAPICH (MV2_COMM_WORLD_*). PMIx announces no size.
    static let launcherSizeVariables = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE"]
    static let launcherRankVariables = ["OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "MV2_COMM_WORLD_RANK"]

    /// True when an MPI launcher (mpirun, mpiexec, srun with PMI) started this process,
    /// judged from its environment before MPI is initialized.
    public static var isLaunchedByMPI: Bool { launchedRank != nil || launchedWorldSize != nil }

    /// The job size the launcher announced, if any, without initializing MPI.
    public static var launchedWorldSize: Int? { firstInteger(launcherSizeVariables) }

    /// This process's rank as the launcher announced it, if any, without initializing MPI.
    public static var launchedRank: Int? { firstInteger(launcherRankVariables) }

    private static func firstInteger(_ names: [String]) -> Int? {
        let environment = ProcessInfo.processInfo.environment
        return names.lazy.compactMap { environment[$0].flatMap { Int($0) } }.first
    }

    // MARK: Lifetime

    /// The environment, if `initialize()` has run in this process.
    public static var current: MPIEnvironment? {
        sharedLock.withLock { shared }
    }

    /// Initializes MPI (once per process; later calls return the same environment),
    /// sets `MPI_ERRORS_RETURN` on `MPI_COMM_WORLD` so failures come back as
    /// `TwoBPError`s instead of aborting inside the library, and installs a SIGTERM
    /// report so that a rank mpirun takes down says what it was waiting for.
    public static func initialize() throws -> MPIEnvironment {
        try sharedLock.withLock {
            if let shared {
                guard !shared.isFinalized else {
                    throw TwoBPError("MPI was already finalized in this process and cannot be initialized again")
                }
                return shared
            }
            var alreadyInitialized: Int32 = 0
            MPI_Initialized(&alreadyInitialized)
            var provided: Int32 = 0
            if alreadyInitialized != 0 {
                MPI_Query_thread(&provided)
            } else {
                let code = MPI_Init_thread(nil, nil, requestedThreadLevel.mpiValue, &provided)
                guard code == twobp_mpi_success() else {
                    let who = launchedRank.map { "rank \($0): " } ?? ""
                    throw TwoBPError("\(who)MPI_Init_thread failed: \(mpiErrorString(code))")
                }
            }
            let world = twobp_mpi_comm_world()
            MPI_Comm_set_errhandler(world, twobp_mpi_errors_return())
            var rank: Int32 = 0
            var size: Int32 = 0
            try check(MPI_Comm_rank(world, &rank), "MPI_Comm_rank")
            try check(MPI_Comm_size(world, &size), "MPI_Comm_size")
            var nameBuffer = [CChar](repeating: 0, count: Int(twobp_mpi_max_processor_name()) + 1)
            var nameLength: Int32 = 0
            MPI_Get_processor_name(&nameBuffer, &nameLength)
            let environment = MPIEnvironment(
                rank: Int(rank), worldSize: Int(size),
                threadLevel: ThreadLevel(mpiValue: provided),
                processorName: String(cString: nameBuffer))
            twobp_mpi_install_termination_report(rank)
            shared = environment
            return environment
        }
    }

    public var isFinalized: Bool { lock.withLock { finalized } }

    func register(_ transport: MPITransport) {
        lock.withLock {
            transports.removeAll { $0.transport == nil }
            transports.append(WeakTransport(transport: transport))
        }
    }

    /// Closes every live `MPITransport` (their sends complete, unmatched receives are
    /// cancelled) and calls `MPI_Finalize`. Collective: every rank calls it.
    /// Idempotent. A close that fails still finalizes, then throws.
    public func finalize() throws {
        let open: [MPITransport]? = lock.withLock {
            guard !finalized else { return nil }
            finalized = true
            return transports.compactMap(\.transport)
        }
        guard let open else { return }
        var firstError: Error?
        for transport in open {
            do { try transport.close() } catch { firstError = firstError ?? error }
        }
        if !MPIEnvironment.isFinalizedByMPI { MPI_Finalize() }
        if let firstError { throw firstError }
    }

    private static var isFinalizedByMPI: Bool {
        var flag: Int32 = 0
        MPI_Finalized(&flag)
        return flag != 0
    }

    /// Prints `twobp rank R: message` to stderr and aborts the whole job through
    /// `MPI_Abort`, which makes mpirun kill every rank and exit with `code`.
    public func abort(_ message: String, code: Int32 = 1) -> Never {
        MPIEnvironment.reportAndAbort(rank: rank, message: message, code: code)
    }

    static func reportAndAbort(rank: Int, message: String, code: Int32) -> Never {
        // Transport errors already start with "rank R: "; say it once.
        let prefix = "rank \(rank): "
        let text = message.hasPrefix(prefix) ? String(message.dropFirst(prefix.count)) : message
        let line = "twobp \(prefix)\(text)\n"
        fflush(nil)
        FileHandle.standardError.write(Data(line.utf8))
        MPI_Abort(twobp_mpi_comm_world(), code == 0 ? 1 : code)
        // MPI_Abort returns only if MPI was never initialized or is already finalized.
        exit(code == 0 ? 1 : code)
    }

    // MARK: Errors

    /// Open MPI's text for an error code, e.g. "MPI_ERR_TRUNCATE: message truncated".
    static func mpiErrorString(_ code: Int32) -> String {
        var buffer = [CChar](repeating: 0, count: Int(twobp_mpi_max_error_string()) + 1)
        var length: Int32 = 0
        guard MPI_Error_string(code, &buffer, &length) == twobp_mpi_success() else { return "MPI error \(code)" }
        return String(cString: buffer)
    }

    public static func check(_ code: Int32, _ what: @autoclosure () -> String) throws {
        guard code != twobp_mpi_success() else { return }
        throw TwoBPError("\(what()) failed: \(mpiErrorString(code))")
    }
}
