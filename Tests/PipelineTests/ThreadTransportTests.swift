import Pipeline
import Tensor
import XCTest

final class ThreadTransportTests: XCTestCase {
    func testTensorsPassByReferenceAndCollectivesSumOverRanks() throws {
        let transports = ThreadTransport.group(ranks: 3, receiveTimeout: 10)
        let results = try RankThreads.run(transports: transports) { transport -> (Double, Bool) in
            let rank = transport.rank
            let sent = Tensor(shape: [2], values: [Float(rank), 1])
            let next = (rank + 1) % 3
            let previous = (rank + 2) % 3
            try transport.send(sent, to: next, tag: MessageTag(kind: .activation, microBatch: 0, stage: next))
            let received = try transport.receive(from: previous, tag: MessageTag(kind: .activation, microBatch: 0, stage: rank), shape: [2])
            let sum = try transport.allReduceSum([received[0]].map(Double.init))
            let gathered = try transport.gather([UInt8(rank)], root: 0)
            return (sum[0], rank == 0 ? gathered == [[0], [1], [2]] : gathered == nil)
        }
        XCTAssertEqual(results.map(\.0), [3, 3, 3])
        XCTAssertEqual(results.map(\.1), [true, true, true])
    }

    func testAFailingRankWakesBlockedRanksPromptlyAndIsNamed() {
        let transports = ThreadTransport.group(ranks: 2, receiveTimeout: 60)
        let started = Date()
        XCTAssertThrowsError(try RankThreads.run(transports: transports) { transport -> Int in
            if transport.rank == 1 { throw TwoBPError("injected fault") }
            return Int(try transport.receive(from: 1, tag: MessageTag(kind: .gradient, microBatch: 0, stage: 0), shape: [1])[0])
        }) { error in
            XCTAssertEqual("\(error)", "stage 1 failed: injected fault")
        }
        XCTAssertLessThan(Date().timeIntervalSince(started), 10, "the blocked rank must not wait for its timeout")
    }

    func testReceiveTimesOutWithAMessageNamingBothRanks() {
        let transport = ThreadTransport.group(ranks: 2, receiveTimeout: 0.2)[0]
        XCTAssertThrowsError(try transport.receive(from: 1, tag: MessageTag(kind: .activation, microBatch: 3, stage: 0), shape: [1])) { error in
            XCTAssertTrue("\(error)".contains("rank 0 waiting for activation of micro-batch 3 for stage 0 from rank 1"), "\(error)")
        }
    }
}
