import CMPIShim
import Foundation
import Tensor

/// `Transport` between processes through Open MPI: one rank per pipeline stage.
///
/// - Sends are `MPI_Isend`: `send` returns at once, so p1's gradient leaves the
///   moment it exists. The transport keeps the tensor alive until the send
///   completes; the caller must not write into a sent tensor afterwards (treat it
///   as handed over, as `ThreadTransport` hands the same object to the receiver).
/// - `expect` posts the `MPI_Irecv` early, straight into the tensor `receive`
///   will return, so a message that arrives before the stage asks for it lands
///   without a copy. `receive` then polls `MPI_Test` until the message is there,
///   the timeout passes, or MPI reports an error, and throws a `TwoBPError`
///   naming this rank, the peer rank and the tag.
/// - Received tensors come from a pool keyed by shape: a tensor is reused once
///   everyone else has let go of it (`isKnownUniquelyReferenced`), so a training
///   step in steady state allocates no message buffers. Pooled tensors stay
///   charged to the `MemoryMeter` that was current when they were first made.
/// - The communicator is a duplicate of `MPI_COMM_WORLD` with `MPI_ERRORS_RETURN`,
///   so MPI failures become `TwoBPError`s and no other MPI traffic can match our tags.
/// - A rank that dies is not detected by polling: mpirun notices the dead
///   process and kills the others within seconds (each prints what it was
///   waiting for, see `MPIEnvironment.initialize()`). A rank whose host becomes
///   unreachable (a cut link) is caught by the peer watchdog when
///   `Options.peerTimeout` is set (`MPIPeerWatchdog`); a rank that is alive but
///   never sends is caught by the timeout.
///
/// Thread safety: every MPI call is made under one lock (the environment asks for
/// `MPI_THREAD_SERIALIZED`), so any thread may call the transport; a blocked
/// `receive` releases the lock between polls.
public final class MPITransport: Transport, @unchecked Sendable {
    public struct Options: Sendable, Equatable {
        /// Seconds a blocking call (`receive`, collectives, `close`) waits before throwing.
        public var timeout: Double
        /// Seconds a blocked call polls back to back (yielding the core) before it starts sleeping.
        public var spinTime: Double
        /// Longest sleep between two polls once spinning is over, in seconds.
        public var maxPollInterval: Double
        /// Seconds without a heartbeat from another rank before the job is aborted naming it
        /// (`MPIPeerWatchdog`); nil runs no watchdog. Every rank must pass the same choice:
        /// the watchdog's communicator is made collectively.
        public var peerTimeout: Double?

        public init(timeout: Double = 120, spinTime: Double = 500e-6, maxPollInterval: Double = 100e-6,
                    peerTimeout: Double? = nil) {
            self.timeout = timeout
            self.spinTime = spinTime
            self.maxPollInterval = maxPollInterval
            self.peerTimeout = peerTimeout
        }
    }

    /// Counters since the transport was made.
    public struct Statistics: Sendable, Equatable, Codable {
        public var messagesSent = 0
        public var bytesSent = 0
        public var messagesReceived = 0
        public var bytesReceived = 0
        /// Receive buffers made because no pooled tensor of the shape was free.
        public var buffersAllocated = 0
        /// Receives that reused a pooled tensor.
        public var buffersReused = 0
        public var sendsInFlight = 0
        public var peakSendsInFlight = 0
    }

    public let rank: Int
    public let worldSize: Int
    public let environment: MPIEnvironment
    public let options: Options
    /// The largest MPI tag the communicator accepts (`MPI_TAG_UB`).
    public let tagUpperBound: Int

    private let lock = NSLock()
    private var communicator: MPI_Comm?
    private var closed = false
    private var sends: [InFlightSend] = []
    private var posted: [ReceiveKey: [PostedReceive]] = [:]
    /// Receives given up on (timed out, wrong shape): cancelled, kept alive until MPI lets go of their buffers.
    private var abandoned: [PostedReceive] = []
    private var pool: [[Int]: [Tensor]] = [:]
    /// Memory of collectives that timed out: MPI may still write into it, so it is never freed.
    private var stranded: [CollectiveMemory] = []
    private var stats = Statistics()
    private let watchdog: MPIPeerWatchdog?

    private struct ReceiveKey: Hashable {
        let source: Int
        let tag: Int
    }

    private final class InFlightSend {
        let tensor: Tensor
        let destination: Int
        let tag: MessageTag
        var request: MPI_Request? = twobp_mpi_request_null()

        init(tensor: Tensor, destination: Int, tag: MessageTag) {
            self.tensor = tensor
            self.destination = destination
            self.tag = tag
        }
    }

    private final class PostedReceive {
        let tensor: Tensor
        let source: Int
        let tag: MessageTag
        var request: MPI_Request? = twobp_mpi_request_null()
        var isComplete = false
        /// Floats that arrived, once complete.
        var receivedCount = 0
        /// Set when posting or completing failed; thrown by `receive`.
        var error: TwoBPError?

        init(tensor: Tensor, source: Int, tag: MessageTag) {
            self.tensor = tensor
            self.source = source
            self.tag = tag
        }
    }

    /// Makes the transport over a duplicate of `MPI_COMM_WORLD`. Collective: every
    /// rank of the job must call it, in the same order as other collectives.
    public init(environment: MPIEnvironment, options: Options = Options()) throws {
        self.environment = environment
        self.options = options
        rank = environment.rank
        worldSize = environment.worldSize
        guard !environment.isFinalized else {
            throw TwoBPError("rank \(environment.rank): cannot make an MPI transport after MPI_Finalize")
        }
        var duplicate: MPI_Comm? = twobp_mpi_comm_null()
        let rank = environment.rank
        try MPIEnvironment.check(MPI_Comm_dup(twobp_mpi_comm_world(), &duplicate), "rank \(rank): MPI_Comm_dup")
        MPI_Comm_set_errhandler(duplicate, twobp_mpi_errors_return())
        communicator = duplicate
        let upperBound = Int(twobp_mpi_tag_upper_bound(duplicate))
        tagUpperBound = upperBound > 0 ? upperBound : 32767  // 32767: the least MPI guarantees
        if let peerTimeout = options.peerTimeout {
            watchdog = try MPIPeerWatchdog(rank: environment.rank, worldSize: environment.worldSize,
                                           world: twobp_mpi_comm_world(), lock: lock, timeout: peerTimeout)
        } else {
            watchdog = nil
        }
        watchdog?.start()
        environment.register(self)
    }

    deinit {
        // MPI may still read in-flight sends and write posted receives. Waiting here could
        // hold up an error path (a rank about to fail would first wait for its sends), so
        // the buffers are handed to a process-wide list and never freed instead.
        watchdog?.abandon()
        let busy: [AnyObject] = sends + posted.values.flatMap { $0 }.filter { !$0.isComplete } + abandoned + stranded
            + (closed ? [] : watchdog?.busyObjects ?? [])
        if !busy.isEmpty { MPITransport.keepAlive(busy) }
    }

    private static let keptAliveLock = NSLock()
    nonisolated(unsafe) private static var keptAlive: [AnyObject] = []

    private static func keepAlive(_ objects: [AnyObject]) {
        keptAliveLock.withLock { keptAlive += objects }
    }

    public var statistics: Statistics { lock.withLock { stats } }

    // MARK: Point to point

    public func send(_ tensor: Tensor, to destination: Int, tag: MessageTag) throws {
        try checkPeer(destination, "send \(tag) to")
        try checkCount(tensor.count, tag)
        let mpiTag = try checkedTag(tag)
        try lock.withLock {
            let communicator = try openCommunicator()
            let send = InFlightSend(tensor: tensor, destination: destination, tag: tag)
            let code = MPI_Isend(tensor.pointer, Int32(tensor.count), twobp_mpi_float(), Int32(destination),
                                 mpiTag, communicator, &send.request)
            guard code == twobp_mpi_success() else {
                throw mpiError(code, "sending \(tag) to rank \(destination)")
            }
            sends.append(send)
            stats.messagesSent += 1
            stats.bytesSent += tensor.count * MemoryLayout<Float>.stride
            try reapSendsLocked()
        }
    }

    public func expect(from source: Int, tag: MessageTag, shape: [Int]) {
        lock.withLock {
            let message = postReceiveLocked(from: source, tag: tag, shape: shape)
            posted[ReceiveKey(source: source, tag: tag.integerValue), default: []].append(message)
        }
    }

    public func receive(from source: Int, tag: MessageTag, shape: [Int]) throws -> Tensor {
        try checkPeer(source, "receive \(tag) from")
        let key = ReceiveKey(source: source, tag: tag.integerValue)
        let message: PostedReceive = lock.withLock {
            if var queue = posted[key], !queue.isEmpty {
                let first = queue.removeFirst()
                posted[key] = queue.isEmpty ? nil : queue
                return first
            }
            return postReceiveLocked(from: source, tag: tag, shape: shape)
        }
        if let error = message.error {
            lock.withLock { abandonLocked(message) }
            throw error
        }
        guard message.tensor.shape == shape else {
            lock.withLock { abandonLocked(message) }
            throw TwoBPError("rank \(rank): receive of \(tag) from rank \(source) asks for shape \(shape), "
                + "but expect() announced shape \(message.tensor.shape)")
        }
        do {
            try wait(for: "waiting for \(tag) from rank \(source)") {
                completeLocked(message)
                return message.isComplete
            }
        } catch {
            lock.withLock { abandonLocked(message) }
            throw error
        }
        if let error = message.error { throw error }
        guard message.receivedCount == message.tensor.count else {
            throw TwoBPError("rank \(rank): received \(message.receivedCount) floats from rank \(source) for \(tag), "
                + "but the schedule expects shape \(shape) (\(message.tensor.count) floats)")
        }
        return message.tensor
    }

    /// Drives MPI's progress engine: completes finished sends (releasing their
    /// tensors) and lets early messages land. Call it between long computations
    /// when large sends are in flight; every other transport call does it too.
    public func progress() throws {
        try lock.withLock {
            guard !closed else { return }
            try reapSendsLocked()
            for queue in posted.values {
                queue.forEach(completeLocked)
            }
            reapAbandonedLocked()
        }
    }

    /// Blocks until every send made so far has completed (its receiver took it).
    public func waitForSends() throws {
        try wait(for: describeSends()) {
            try reapSendsLocked()
            return sends.isEmpty
        }
    }

    private func describeSends() -> String {
        lock.withLock {
            guard let first = sends.first else { return "waiting for sends to complete" }
            let more = sends.count > 1 ? " and \(sends.count - 1) more" : ""
            return "waiting for the send of \(first.tag) to rank \(first.destination)\(more) to complete"
        }
    }

    /// Tensors the receive pool holds that nobody else uses; `releaseIdleBuffers()` frees them.
    public var idleBufferBytes: Int {
        lock.withLock {
            Array(pool.keys).reduce(0) { bytes, shape in
                withPoolLocked(shape) { tensors in
                    bytes + tensors.indices.filter { isKnownUniquelyReferenced(&tensors[$0]) }
                        .reduce(0) { $0 + tensors[$1].allocatedBytes }
                }
            }
        }
    }

    /// Drops pooled receive buffers nobody else holds (e.g. after training, before evaluation).
    public func releaseIdleBuffers() {
        lock.withLock {
            for shape in Array(pool.keys) {
                withPoolLocked(shape) { tensors in
                    let busy = tensors.indices.filter { !isKnownUniquelyReferenced(&tensors[$0]) }
                    tensors = busy.map { tensors[$0] }
                }
            }
        }
    }

    // MARK: Collectives

    /// `MPI_Iallreduce` (sum of doubles), waited for with the transport's timeout.
    /// Every rank must pass the same number of values.
    public func allReduceSum(_ values: [Double]) throws -> [Double] {
        let memory = CollectiveMemory()
        let input = memory.allocate(Double.self, count: values.count)
        let output = memory.allocate(Double.self, count: values.count)
        for (index, value) in values.enumerated() { input[index] = value }
        try collective("all-reduce of \(values.count) values", memory: memory) { communicator, request in
            MPI_Iallreduce(input, output, Int32(values.count), twobp_mpi_double(), twobp_mpi_sum(), communicator, request)
        }
        return Array(UnsafeBufferPointer(start: output, count: values.count))
    }

    /// Sizes with `MPI_Igather`, then the bytes with `MPI_Igatherv`.
    public func gather(_ bytes: [UInt8], root: Int) throws -> [[UInt8]]? {
        try checkPeer(root, "gather to root")
        guard bytes.count <= Int(Int32.max) else {
            throw TwoBPError("rank \(rank): gather of \(bytes.count) bytes exceeds MPI's 2 GiB count limit")
        }
        let isRoot = root == rank
        let memory = CollectiveMemory()
        let size = memory.allocate(Int64.self, count: 1)
        size.pointee = Int64(bytes.count)
        let sizes = memory.allocate(Int64.self, count: worldSize)
        try collective("gather of sizes to rank \(root)", memory: memory) { communicator, request in
            MPI_Igather(size, 1, twobp_mpi_int64(), sizes, 1, twobp_mpi_int64(), Int32(root), communicator, request)
        }
        let counts = memory.allocate(Int32.self, count: worldSize)
        let displacements = memory.allocate(Int32.self, count: worldSize)
        var total = 0
        if isRoot {
            for index in 0..<worldSize {
                counts[index] = Int32(clamping: sizes[index])
                displacements[index] = Int32(clamping: total)
                total += Int(sizes[index])
            }
            guard total <= Int(Int32.max) else {
                throw TwoBPError("rank \(rank): gather of \(total) bytes exceeds MPI's 2 GiB count limit")
            }
        }
        let input = memory.allocate(UInt8.self, count: bytes.count)
        for (index, byte) in bytes.enumerated() { input[index] = byte }
        let output = memory.allocate(UInt8.self, count: total)
        try collective("gather of \(bytes.count) bytes to rank \(root)", memory: memory) { communicator, request in
            MPI_Igatherv(input, Int32(bytes.count), twobp_mpi_byte(), output, counts, displacements, twobp_mpi_byte(),
                         Int32(root), communicator, request)
        }
        guard isRoot else { return nil }
        return (0..<worldSize).map { index in
            Array(UnsafeBufferPointer(start: output + Int(displacements[index]), count: Int(counts[index])))
        }
    }

    /// Prints `twobp rank R: message` to stderr and aborts the job with `MPI_Abort`,
    /// which makes mpirun kill every other rank and exit non-zero. Does not return.
    public func fail(_ message: String) {
        MPIEnvironment.reportAndAbort(rank: rank, message: message, code: 1)
    }

    /// Waits for every send, cancels receives that were posted but never matched,
    /// and frees the communicator. Later calls throw. `MPIEnvironment.finalize()`
    /// closes every transport still open.
    public func close() throws {
        let alreadyClosed = lock.withLock { closed }
        guard !alreadyClosed else { return }
        try waitForSends()
        watchdog?.stop()
        lock.withLock {
            for queue in posted.values { queue.forEach(abandonLocked) }
            posted = [:]
        }
        try wait(for: "waiting for cancelled receives to be released") {
            reapAbandonedLocked()
            return abandoned.isEmpty && watchdog?.isDrainedLocked() ?? true
        }
        lock.withLock {
            closed = true
            if communicator != nil { MPI_Comm_free(&communicator) }
            watchdog?.freeLocked()
        }
    }

    // MARK: Internals (names ending in Locked expect `lock` to be held)

    private func openCommunicator() throws -> MPI_Comm? {
        guard !closed else { throw TwoBPError("rank \(rank): the MPI transport is closed") }
        return communicator
    }

    private func checkPeer(_ peer: Int, _ what: @autoclosure () -> String) throws {
        guard (0..<worldSize).contains(peer) else {
            throw TwoBPError("rank \(rank): cannot \(what()) rank \(peer): the job has ranks 0..<\(worldSize)")
        }
    }

    private func checkCount(_ count: Int, _ tag: MessageTag) throws {
        guard count <= Int(Int32.max) else {
            throw TwoBPError("rank \(rank): \(tag) has \(count) floats, more than one MPI message carries (\(Int32.max))")
        }
    }

    private func checkedTag(_ tag: MessageTag) throws -> Int32 {
        let value = tag.integerValue
        guard value >= 0, value <= tagUpperBound else {
            throw TwoBPError("rank \(rank): \(tag) needs MPI tag \(value), above this MPI's limit \(tagUpperBound)")
        }
        return Int32(value)
    }

    private func mpiError(_ code: Int32, _ what: String) -> TwoBPError {
        TwoBPError("rank \(rank): \(what) failed: \(MPIEnvironment.mpiErrorString(code))")
    }

    private func checkCode(_ code: Int32, _ what: @autoclosure () -> String) throws {
        guard code != twobp_mpi_success() else { return }
        throw mpiError(code, what())
    }

    /// A fresh or pooled tensor of `shape` that nobody else references.
    private func acquireBufferLocked(shape: [Int]) -> Tensor {
        withPoolLocked(shape) { tensors in
            for index in tensors.indices where isKnownUniquelyReferenced(&tensors[index]) {
                stats.buffersReused += 1
                return tensors[index]
            }
            let tensor = Tensor(zeros: shape)
            tensors.append(tensor)
            stats.buffersAllocated += 1
            return tensor
        }
    }

    /// Runs `body` on the pooled tensors of `shape`, moved out of the dictionary so that
    /// the one array holds the pool's only reference to each (`isKnownUniquelyReferenced`
    /// then means "nobody else holds it"; a dictionary copy would add a second one).
    private func withPoolLocked<Result>(_ shape: [Int], _ body: (inout [Tensor]) -> Result) -> Result {
        var tensors = pool.removeValue(forKey: shape) ?? []
        defer { if !tensors.isEmpty { pool[shape] = tensors } }
        return body(&tensors)
    }

    /// Posts an `MPI_Irecv` for one message into a pooled tensor; an error is kept in the entry.
    private func postReceiveLocked(from source: Int, tag: MessageTag, shape: [Int]) -> PostedReceive {
        let message = PostedReceive(tensor: acquireBufferLocked(shape: shape), source: source, tag: tag)
        do {
            try checkPeer(source, "receive \(tag) from")
            try checkCount(message.tensor.count, tag)
            let mpiTag = try checkedTag(tag)
            let code = MPI_Irecv(message.tensor.pointer, Int32(message.tensor.count), twobp_mpi_float(),
                                 Int32(source), mpiTag, try openCommunicator(), &message.request)
            try checkCode(code, "posting the receive of \(tag) from rank \(source)")
        } catch {
            message.error = error as? TwoBPError ?? TwoBPError("rank \(rank): \(error)")
            message.isComplete = true
        }
        return message
    }

    /// Tests a posted receive once; on completion records the count (or the error).
    private func completeLocked(_ message: PostedReceive) {
        guard !message.isComplete else { return }
        var flag: Int32 = 0
        var status = MPI_Status()
        let code = MPI_Test(&message.request, &flag, &status)
        guard code == twobp_mpi_success() else {
            message.isComplete = true
            message.error = mpiError(code, "receiving \(message.tag) from rank \(message.source)")
            return
        }
        guard flag != 0 else { return }
        var count: Int32 = 0
        MPI_Get_count(&status, twobp_mpi_float(), &count)
        message.receivedCount = Int(count)
        message.isComplete = true
        stats.messagesReceived += 1
        stats.bytesReceived += Int(count) * MemoryLayout<Float>.stride
    }

    /// Cancels a receive the caller gave up on; its buffer stays alive until MPI releases it.
    private func abandonLocked(_ message: PostedReceive) {
        guard !message.isComplete else { return }
        MPI_Cancel(&message.request)
        abandoned.append(message)
    }

    private func reapAbandonedLocked() {
        abandoned.removeAll { message in
            var flag: Int32 = 0
            let code = MPI_Test(&message.request, &flag, twobp_mpi_status_ignore())
            return code != twobp_mpi_success() || flag != 0
        }
    }

    /// Tests every in-flight send once and drops (releases the tensor of) those that completed.
    private func reapSendsLocked() throws {
        var failure: TwoBPError?
        sends.removeAll { send in
            var flag: Int32 = 0
            let code = MPI_Test(&send.request, &flag, twobp_mpi_status_ignore())
            if code != twobp_mpi_success() {
                failure = failure ?? mpiError(code, "sending \(send.tag) to rank \(send.destination)")
                return true
            }
            return flag != 0
        }
        stats.sendsInFlight = sends.count
        stats.peakSendsInFlight = max(stats.peakSendsInFlight, sends.count)
        if let failure { throw failure }
    }

    /// Polls `isDone` (called with the lock held, also reaping sends) until it returns
    /// true: back to back (yielding the core) for `spinTime`, then sleeping with
    /// exponential back-off up to `maxPollInterval`; throws once `timeout` has passed.
    /// `activity` ("waiting for ... from rank 1") is formatted only when the wait
    /// outlasts the spin, for the SIGTERM report and the timeout error.
    private func wait(for activity: @autoclosure () -> String, _ isDone: () throws -> Bool) throws {
        let start = DispatchTime.now().uptimeNanoseconds
        var sleepMicroseconds = 10.0
        var description: String?
        defer { if description != nil { twobp_mpi_set_activity(nil) } }
        while true {
            let done = try lock.withLock { () throws -> Bool in
                if try isDone() { return true }
                try reapSendsLocked()
                return false
            }
            if done { return }
            let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            if elapsed < options.spinTime {
                sched_yield()
                continue
            }
            if description == nil {
                description = activity()
                twobp_mpi_set_activity(description)
            }
            if elapsed > options.timeout {
                throw TwoBPError("rank \(rank): timed out after \(Self.seconds(options.timeout)) \(description!)")
            }
            usleep(UInt32(sleepMicroseconds))
            sleepMicroseconds = min(sleepMicroseconds * 2, options.maxPollInterval * 1e6)
        }
    }

    private static func seconds(_ value: Double) -> String {
        value == value.rounded() ? "\(Int(value)) s" : "\(value) s"
    }

    /// Starts a non-blocking collective and waits for it with the transport's timeout.
    /// If the wait fails, MPI may still write into `memory`, so the transport keeps it forever.
    private func collective(_ what: String, memory: CollectiveMemory,
                            start: (MPI_Comm?, UnsafeMutablePointer<MPI_Request?>) -> Int32) throws {
        var request: MPI_Request? = twobp_mpi_request_null()
        try lock.withLock {
            try checkCode(start(try openCommunicator(), &request), "starting the \(what)")
        }
        do {
            try wait(for: "waiting for the \(what) with all \(worldSize) ranks") {
                var flag: Int32 = 0
                try checkCode(MPI_Test(&request, &flag, twobp_mpi_status_ignore()), "the \(what)")
                return flag != 0
            }
        } catch {
            lock.withLock { stranded.append(memory) }
            throw error
        }
    }

    /// Memory a non-blocking collective reads and writes, freed with this object.
    private final class CollectiveMemory {
        private var allocations: [UnsafeMutableRawPointer] = []

        func allocate<T>(_ type: T.Type, count: Int) -> UnsafeMutablePointer<T> {
            let pointer = UnsafeMutablePointer<T>.allocate(capacity: Swift.max(count, 1))
            allocations.append(UnsafeMutableRawPointer(pointer))
            return pointer
        }

        deinit {
            for allocation in allocations { allocation.deallocate() }
        }
    }
}
