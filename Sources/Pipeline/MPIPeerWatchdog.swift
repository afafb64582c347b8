import CMPIShim
import Foundation
import Tensor

/// Notices a peer rank that has gone silent and aborts the job naming it.
///
/// mpirun sees a rank's process die within seconds, but not a host whose network link is
/// cut: the TCP connections stay open, sends sit in the kernel's retransmission queue for
/// many minutes, and every rank waiting on the lost one would wait until its receive
/// timeout, which must be long enough for the longest legitimate compute between two
/// messages. The watchdog separates "busy" from "gone": a thread of its own sends every
/// other rank a 4-byte heartbeat each `interval` on a communicator of its own (so no
/// message tag of the pipeline can match it) and checks that one has arrived from each.
/// A peer unheard for `timeout` seconds is taken as lost, and the job is aborted with
/// `MPI_Abort` and "rank R: heard nothing from rank P for S s". A rank computing a long
/// step still heartbeats, so a step may take any time.
///
/// The thread runs only while the watchdog is started, and makes its MPI calls under the
/// transport's lock (`MPI_THREAD_SERIALIZED`). It counts silence only while it is able to
/// poll: if it could not take the lock or was not scheduled for a while, that gap counts
/// as at most two intervals, so a stalled machine is not mistaken for a lost peer.
/// `stop()` sends every peer a goodbye, after which that peer no longer expects to hear
/// from this rank (ranks finish at different times).
final class MPIPeerWatchdog: @unchecked Sendable {
    let rank: Int
    let worldSize: Int
    let timeout: Double
    let interval: Double

    private let lock: NSLock
    private var communicator: MPI_Comm?
    private var peers: [Peer] = []
    private var thread: Thread?
    private let wakeUp = DispatchSemaphore(value: 0)
    private let finished = DispatchSemaphore(value: 0)
    private var stopping = false
    private var lastPoll: UInt64 = 0

    private static let alive: Int32 = 1
    private static let goodbye: Int32 = 2

    /// What this rank knows of one other rank; buffers are MPI's while a request is active.
    private final class Peer {
        let rank: Int
        let incoming = UnsafeMutablePointer<Int32>.allocate(capacity: 1)
        let outgoing = UnsafeMutablePointer<Int32>.allocate(capacity: 1)
        let farewell = UnsafeMutablePointer<Int32>.allocate(capacity: 1)
        var receive: MPI_Request? = twobp_mpi_request_null()
        var send: MPI_Request? = twobp_mpi_request_null()
        var goodbyeSend: MPI_Request? = twobp_mpi_request_null()
        /// Seconds since the last heartbeat arrived, as far as the watchdog could observe.
        var silence = 0.0
        var hasSaidGoodbye = false

        init(rank: Int) { self.rank = rank }

        deinit {
            incoming.deallocate()
            outgoing.deallocate()
            farewell.deallocate()
        }
    }

    /// The heartbeat interval for a timeout: a tenth of it, between 50 ms and 1 s.
    static func interval(forTimeout timeout: Double) -> Double { min(1, max(0.05, timeout / 10)) }

    /// Duplicates `world` for the heartbeats. Collective: every rank of the job must call it.
    init(rank: Int, worldSize: Int, world: MPI_Comm?, lock: NSLock, timeout: Double) throws {
        guard timeout > 0, timeout.isFinite else {
            throw TwoBPError("rank \(rank): the peer timeout must be a positive number of seconds, got \(timeout)")
        }
        self.rank = rank
        self.worldSize = worldSize
        self.timeout = timeout
        self.interval = Self.interval(forTimeout: timeout)
        self.lock = lock
        var duplicate: MPI_Comm? = twobp_mpi_comm_null()
        try MPIEnvironment.check(MPI_Comm_dup(world, &duplicate), "rank \(rank): MPI_Comm_dup for the peer watchdog")
        MPI_Comm_set_errhandler(duplicate, twobp_mpi_errors_return())
        communicator = duplicate
        peers = (0..<worldSize).filter { $0 != rank }.map(Peer.init)
    }

    /// Posts the first heartbeat receives and starts the thread.
    func start() {
        lock.withLock {
            for peer in peers { postReceiveLocked(peer) }
            lastPoll = DispatchTime.now().uptimeNanoseconds
        }
        let thread = Thread { [self] in
            while !lock.withLock({ stopping }) {
                lock.withLock { pollLocked() }
                _ = wakeUp.wait(timeout: .now() + interval)
            }
            finished.signal()
        }
        thread.name = "twobp peer watchdog"
        self.thread = thread
        thread.start()
    }

    /// Stops the thread and sends every peer a goodbye. The caller then waits, with its own
    /// timeout, for `isDrainedLocked()` before `freeLocked()`.
    func stop() {
        guard thread != nil else { return }
        lock.withLock { stopping = true }
        wakeUp.signal()
        finished.wait()
        thread = nil
        lock.withLock {
            for peer in peers {
                peer.farewell.pointee = Self.goodbye
                MPI_Isend(peer.farewell, 1, twobp_mpi_int32(), Int32(peer.rank), 0, communicator, &peer.goodbyeSend)
                if !peer.hasSaidGoodbye { MPI_Cancel(&peer.receive) }
            }
        }
    }

    /// True once every goodbye has left and every heartbeat request is released.
    func isDrainedLocked() -> Bool {
        peers.allSatisfy { peer in
            [\Peer.receive, \Peer.send, \Peer.goodbyeSend].allSatisfy { path in
                var flag: Int32 = 0
                var request = peer[keyPath: path]
                let code = MPI_Test(&request, &flag, twobp_mpi_status_ignore())
                peer[keyPath: path] = request
                return code != twobp_mpi_success() || flag != 0
            }
        }
    }

    /// Ends the thread without waiting for it or saying goodbye (a transport dropped unclosed).
    func abandon() {
        lock.withLock { stopping = true }
        wakeUp.signal()
    }

    /// Frees the communicator (after `stop()`). Requests still active keep their buffers alive.
    func freeLocked() {
        if communicator != nil { MPI_Comm_free(&communicator) }
    }

    /// Objects MPI may still write into, for the transport to keep alive when it cannot wait.
    var busyObjects: [AnyObject] { peers }

    private func postReceiveLocked(_ peer: Peer) {
        MPI_Irecv(peer.incoming, 1, twobp_mpi_int32(), Int32(peer.rank), 0, communicator, &peer.receive)
    }

    private func pollLocked() {
        let now = DispatchTime.now().uptimeNanoseconds
        let observed = min(Double(now &- lastPoll) / 1e9, 2 * interval)
        lastPoll = now
        for peer in peers where !peer.hasSaidGoodbye {
            // Take every heartbeat that has arrived, so none pile up after a stall.
            var heard = false
            var flag: Int32 = 0
            while !peer.hasSaidGoodbye,
                  MPI_Test(&peer.receive, &flag, twobp_mpi_status_ignore()) == twobp_mpi_success(), flag != 0 {
                heard = true
                if peer.incoming.pointee == Self.goodbye {
                    peer.hasSaidGoodbye = true
                } else {
                    postReceiveLocked(peer)
                }
            }
            peer.silence = heard ? 0 : peer.silence + observed
            // One heartbeat in flight per peer: a peer that stops taking them costs nothing more.
            var sent: Int32 = 0
            MPI_Test(&peer.send, &sent, twobp_mpi_status_ignore())
            if sent != 0 {
                peer.outgoing.pointee = Self.alive
                MPI_Isend(peer.outgoing, 1, twobp_mpi_int32(), Int32(peer.rank), 0, communicator, &peer.send)
            }
        }
        if let lost = peers.first(where: { !$0.hasSaidGoodbye && $0.silence > timeout }) {
            // Under the lock, so no other thread is inside MPI while the job is aborted.
            MPIEnvironment.reportAndAbort(
                rank: rank,
                message: "heard nothing from rank \(lost.rank) for \(Self.seconds(lost.silence)) (its process is stuck "
                    + "or its host unreachable); aborting the job (--peer-timeout \(Self.seconds(timeout)) sets this limit)",
                code: 1)
        }
    }

    private static func seconds(_ value: Double) -> String { String(format: "%g s", (value * 10).rounded() / 10) }
}
