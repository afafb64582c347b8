import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import XCTest
@testable import Schedules

final class RenderTests: XCTestCase {
    private func oneFOneBTimeline(twoBP: Bool = false) throws -> Timeline {
        try Simulator.simulate(HandBuilt.oneFOneB(ranks: 4, microBatches: 8, twoBP: twoBP), costs: HandBuilt.equalCosts)
    }

    /// Collects element names, attributes and text of an XML document, failing on malformed XML.
    private final class XMLCollector: NSObject, XMLParserDelegate {
        var elements: [(name: String, attributes: [String: String])] = []
        var texts: [String] = []
        private var text = ""

        func parser(_ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?,
                    qualifiedName: String?, attributes: [String: String] = [:]) {
            elements.append((elementName, attributes))
            text = ""
        }

        func parser(_ parser: XMLParser, foundCharacters string: String) { text += string }

        func parser(_ parser: XMLParser, didEndElement elementName: String, namespaceURI: String?, qualifiedName: String?) {
            if elementName == "text" { texts.append(text) }
            text = ""
        }
    }

    private func parseXML(_ svg: String, file: StaticString = #filePath, line: UInt = #line) -> XMLCollector {
        let collector = XMLCollector()
        let parser = XMLParser(data: Data(svg.utf8))
        parser.delegate = collector
        XCTAssertTrue(parser.parse(), "SVG is not well-formed XML: \(String(describing: parser.parserError))", file: file, line: line)
        return collector
    }

    func testSVGIsWellFormedWithOneBoxPerActionAndTitleStatistics() throws {
        let timeline = try oneFOneBTimeline()
        let svg = TimelineSVG.render(timeline, title: "1f1b <p=4> & m=8")
        let xml = parseXML(svg)
        XCTAssertEqual(xml.elements.first?.name, "svg")
        let boxes = xml.elements.filter { $0.name == "rect" && $0.attributes["stroke"] == "#ffffff" }
        XCTAssertEqual(boxes.count, timeline.events.count)
        let title = try XCTUnwrap(xml.texts.first)
        XCTAssertTrue(title.hasPrefix("1f1b <p=4> & m=8"), title)
        XCTAssertTrue(title.contains("step 33 s"), title)
        XCTAssertTrue(title.contains("bubble 27.3%"), title)
        XCTAssertTrue(xml.texts.contains("rank 3"))
        XCTAssertTrue(xml.texts.contains("7"), "micro-batch numbers are written in the boxes")
        XCTAssertTrue(xml.texts.contains("B fused backward"), "legend names the kinds present")
        XCTAssertFalse(xml.texts.contains("I backward-p1"), "legend leaves out kinds not present")
        XCTAssertTrue(xml.texts.contains("time (s)"))
    }

    func testSVGColoursDistinguishKindsAndChunks() throws {
        let colours = [Action(.forward, 0), Action(.backwardInput, 0), Action(.backwardWeight, 0),
                       Action(.backwardWeight, nil), Action(.backwardFull, 0)].map { RenderStyle.colour(of: $0).hex }
        XCTAssertEqual(Set(colours).count, colours.count)
        XCTAssertNotEqual(RenderStyle.colour(of: Action(.forward, 0, chunk: 1), chunks: 2),
                          RenderStyle.colour(of: Action(.forward, 0), chunks: 2))
    }

    func testStackedSVGSharesOneAxisAndLabelsEachPanel() throws {
        let plain = try oneFOneBTimeline(), split = try oneFOneBTimeline(twoBP: true)
        let svg = TimelineSVG.renderStacked([TimelinePanel(label: "1F1B", timeline: plain),
                                             TimelinePanel(label: "1F1B + 2BP", timeline: split)],
                                            title: "measured vs simulated", plotWidth: 600)
        let xml = parseXML(svg)
        XCTAssertEqual(xml.texts.first, "measured vs simulated")
        XCTAssertTrue(xml.texts.contains { $0.hasPrefix("1F1B — step") })
        XCTAssertTrue(xml.texts.contains { $0.hasPrefix("1F1B + 2BP — step") })
        XCTAssertEqual(xml.texts.filter { $0 == "rank 0" }.count, 2)
        XCTAssertEqual(xml.texts.filter { $0 == "time (s)" }.count, 1)
        // The shorter timeline's idle background is proportionally shorter on the shared scale.
        let backgrounds = xml.elements.filter { $0.name == "rect" && $0.attributes["fill"] == "#eeeeee" }
            .compactMap { Double($0.attributes["width"] ?? "") }
        XCTAssertEqual(backgrounds.first, 600)
        XCTAssertEqual(try XCTUnwrap(backgrounds.last), 600 * split.stepTime / plain.stepTime, accuracy: 0.01)
    }

    func testChromeTraceHasCompleteEventsInMicrosecondsPerRankThread() throws {
        let timeline = try oneFOneBTimeline()
        let json = try ChromeTrace.render(timeline, name: "1f1b")
        let root = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        let events = try XCTUnwrap(root["traceEvents"] as? [[String: Any]])
        let complete = events.filter { $0["ph"] as? String == "X" }
        XCTAssertEqual(complete.count, timeline.events.count)
        for event in complete {
            XCTAssertNotNil(event["name"] as? String)
            XCTAssertNotNil(event["ts"] as? Double)
            XCTAssertNotNil(event["dur"] as? Double)
            XCTAssertNotNil(event["pid"] as? Int)
            XCTAssertNotNil(event["tid"] as? Int)
        }
        let f3 = try XCTUnwrap(complete.first { $0["name"] as? String == "F3" && $0["tid"] as? Int == 0 })
        XCTAssertEqual(f3["ts"] as? Double, 3e6)
        XCTAssertEqual(f3["dur"] as? Double, 1e6)
        XCTAssertEqual(f3["cat"] as? String, "F")
        let threadNames = events.filter { $0["name"] as? String == "thread_name" }
            .compactMap { ($0["args"] as? [String: Any])?["name"] as? String }
        XCTAssertEqual(threadNames, ["rank 0", "rank 1", "rank 2", "rank 3"])
    }

    func testChromeTracePutsTransfersOnTheirOwnThreadAndPanelsInTheirOwnProcess() throws {
        let costs = CostModel.uniform(forward: 1, backwardInput: 1, backwardWeight: 1, latency: 0.5)
        let lowered = HandBuilt.parse(["F0 SEND_F0 RECV_B0 I0 W0", "RECV_F0 F0 I0 SEND_B0 W0"], microBatches: 1)
        let timeline = try Simulator.simulate(lowered, costs: costs)
        let json = try ChromeTrace.render([TimelinePanel(label: "measured", timeline: timeline),
                                           TimelinePanel(label: "simulated", timeline: timeline)])
        let root = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        let events = try XCTUnwrap(root["traceEvents"] as? [[String: Any]])
        let sends = events.filter { $0["name"] as? String == "SEND_F0" }
        XCTAssertEqual(sends.compactMap { $0["tid"] as? Int }, [2, 2], "rank 0's transfers go on thread ranks + 0")
        XCTAssertEqual(Set(sends.compactMap { $0["pid"] as? Int }), [0, 1])
        let processNames = events.filter { $0["name"] as? String == "process_name" }
            .compactMap { ($0["args"] as? [String: Any])?["name"] as? String }
        XCTAssertEqual(processNames, ["measured", "simulated"])
    }

    func testTextRenderingOfOneFOneB() throws {
        let schedule = HandBuilt.oneFOneB(ranks: 2, microBatches: 2)
        let text = TimelineText.render(try Simulator.simulate(schedule, costs: HandBuilt.equalCosts), title: "1f1b")
        XCTAssertEqual(text, """
            1f1b — step 9 s · bubble 33.3% · 1 column = 0.5 s
            rank 0 |F0F1....B0--..B1--| idle 33.3%
            rank 1 |..F0B0--F1B1--....| idle 33.3%

            """)
    }

    func testTextRenderingFallsBackToKindLettersWhenNarrow() throws {
        let schedule = HandBuilt.oneFOneB(ranks: 2, microBatches: 2)
        let timeline = try Simulator.simulate(schedule, costs: HandBuilt.equalCosts)
        let text = TimelineText.render(timeline, title: "1f1b", columnsPerSecond: 1)
        XCTAssertTrue(text.contains("rank 0 |FF..B0.B1| idle 33.3%"), text)
        XCTAssertEqual(TimelineText.label(of: Action(.forward, 12, chunk: 1), columns: 5), "1F12-")
    }
}
