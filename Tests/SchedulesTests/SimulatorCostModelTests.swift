import Foundation
import XCTest
@testable import Schedules

final class SimulatorCostModelTests: XCTestCase {
    func testParsesTheUniformStringForm() throws {
        let costs = try CostModel(parsing: "F=1,I=1,W=1")
        XCTAssertEqual(costs, .uniform(forward: 1, backwardInput: 1, backwardWeight: 1))
        XCTAssertEqual(costs.stage(7).backwardFull, 2, "one entry serves every stage; B = I + W")
    }

    func testParsesEveryKey() throws {
        let costs = try CostModel(parsing: " F=1.5, I=2 ,W=0.5,latency=1e-5,bandwidth=25e9,bytes=4096,act=100,stash=40,static=1000,limit=5e3,efficiency=0.75")
        let stage = costs.stage(0)
        XCTAssertEqual([stage.forward, stage.backwardInput, stage.backwardWeight], [1.5, 2, 0.5])
        XCTAssertEqual([stage.activationBytes, stage.stashBytes, stage.staticBytes], [100, 40, 1000])
        XCTAssertEqual(costs.latency, 1e-5)
        XCTAssertEqual(costs.bandwidth, 25e9)
        XCTAssertEqual(costs.messageBytes, 4096)
        XCTAssertEqual(costs.memoryLimit, 5000)
        XCTAssertEqual(costs.concatenationEfficiency, 0.75)
        XCTAssertEqual(costs.transferTime, 1e-5 + 4096 / 25e9, accuracy: 1e-15)
    }

    func testBackwardFromBAndOneHalf() throws {
        XCTAssertEqual(try CostModel(parsing: "F=1,B=3,I=1").stage(0).backwardWeight, 2)
        XCTAssertEqual(try CostModel(parsing: "F=1,B=3,W=1").stage(0).backwardInput, 2)
        XCTAssertEqual(try CostModel(parsing: "F=1,B=3").stage(0).backwardInput, 1.5)
        XCTAssertEqual(try CostModel(parsing: "F=1,I=1,W=2,B=3").stage(0).backwardFull, 3)
    }

    func testRejectsBadStringsWithMessages() {
        let cases = [
            ("F=1,I=1", "costs need the backward"),
            ("I=1,W=1", "costs need F"),
            ("F=1,I=1,W=1,X=2", "unknown cost key 'X'"),
            ("F=1,I=one,W=1", "must be a number"),
            ("F=1,I=-1,W=1", "must be a number >= 0"),
            ("F=1,F=2,I=1,W=1", "given twice"),
            ("F=1,I=1,W=1,B=5", "B must equal I + W"),
            ("F=1,I=4,B=3", "smaller than I"),
            ("F", "KEY=NUMBER"),
        ]
        for (text, expected) in cases {
            XCTAssertThrowsError(try CostModel(parsing: text), text) { error in
                XCTAssertTrue(String(describing: error).contains(expected), "\(text): \(error)")
            }
        }
    }

    func testJSONRoundTripsAndFillsDefaults() throws {
        var costs = CostModel(stages: [StageCost(forward: 1, backwardInput: 2, backwardWeight: 1.5, concatenatedBackwardWeight: [1.5, 2.5],
                                                 activationBytes: 10, stashBytes: 4, staticBytes: 99),
                                       StageCost(forward: 2, backwardInput: 2, backwardWeight: 2)],
                              latency: 0.01, bandwidth: 1e9, messageBytes: 1 << 20, concatenationEfficiency: 0.8, memoryLimit: 1 << 30)
        XCTAssertEqual(try CostModel(json: try costs.jsonData()), costs)
        costs.bandwidth = nil
        costs.memoryLimit = nil
        XCTAssertEqual(try CostModel(json: try costs.jsonData()), costs, "unlimited bandwidth and memory survive as absent fields")

        let minimal = #"{"stages": [{"forward": 1, "backwardInput": 1, "backwardWeight": 1}]}"#
        XCTAssertEqual(try CostModel(json: Data(minimal.utf8)), .uniform(forward: 1, backwardInput: 1, backwardWeight: 1))
    }

    func testJSONErrorsNameTheField() {
        let missing = #"{"stages": [{"forward": 1, "backwardInput": 1}]}"#
        XCTAssertThrowsError(try CostModel(json: Data(missing.utf8))) { error in
            XCTAssertTrue(String(describing: error).contains("missing 'backwardWeight' at stages[0]"), "\(error)")
        }
        let negative = #"{"stages": [{"forward": -1, "backwardInput": 1, "backwardWeight": 1}]}"#
        XCTAssertThrowsError(try CostModel(json: Data(negative.utf8))) { error in
            XCTAssertTrue(String(describing: error).contains("negative or non-finite time"), "\(error)")
        }
        XCTAssertThrowsError(try CostModel(json: Data(#"{"stages": []}"#.utf8)))
        XCTAssertThrowsError(try CostModel(json: Data("not json".utf8)))
    }

    func testConcatenatedWeightTimeAndMemoryDeltas() {
        var costs = CostModel.uniform(forward: 1, backwardInput: 1, backwardWeight: 2, activationBytes: 10, stashBytes: 4,
                                      concatenationEfficiency: 0.5)
        XCTAssertEqual(costs.backwardWeightTime(stage: 0, microBatches: 0), 0)
        XCTAssertEqual(costs.backwardWeightTime(stage: 0, microBatches: 1), 2)
        XCTAssertEqual(costs.backwardWeightTime(stage: 0, microBatches: 3), 2 * (1 + 2 * 0.5))
        costs.stages[0].concatenatedBackwardWeight = [2, 3]
        XCTAssertEqual(costs.backwardWeightTime(stage: 0, microBatches: 2), 3, "a measured entry wins")
        XCTAssertEqual(costs.backwardWeightTime(stage: 0, microBatches: 3), 4, "past the table, the efficiency rule")
        let deltas = ActionKind.allCases.map { costs.memoryDelta(of: $0, stage: 0) }
        XCTAssertEqual(deltas, [10, -6, -4, -10, 0, 0, 0, 0], "F I W B SEND_F RECV_F SEND_B RECV_B")
        XCTAssertEqual(costs.memoryDelta(of: .backwardWeight, stage: 0, microBatches: 3), -12)
    }
}
