package gateway

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/handoff-dev/handoff"
)

const (
	handoffReply = "Connecting you to a human agent. Someone will be with you shortly."
	cancelReply  = "You are back with the bot."
	chatBotReply = `Say \"agent\" to talk to a person.`
	at           = `"time":"2026-03-04T10:15:30Z"`
)

// gwCase is one table test: optional config and state, earlier requests
// (checked for 200 only), then the request under test with its exact
// response and the exact events it leaves on the conversation's subject.
type gwCase struct {
	name   string
	cfg    func(*Config)
	setup  func(*env)
	before []request
	req    request
	status int
	body   string
	conv   string
	events []wantEvent
	mode   handoff.Mode
}

func runCases(t *testing.T, cases []gwCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.cfg)
			if tc.setup != nil {
				tc.setup(e)
			}
			for i, b := range tc.before {
				if code, body := e.do(b); code/100 != 2 {
					t.Fatalf("before[%d]: %d %s", i, code, body)
				}
			}
			code, body := e.do(tc.req)
			if code != tc.status {
				t.Fatalf("status %d, want %d; body %s", code, tc.status, body)
			}
			jsonEqual(t, "response", body, tc.body)
			checkEvents(t, tc.conv, e.events(tc.conv), tc.events)
			if tc.mode != "" {
				if m := e.mode(tc.conv); m != tc.mode {
					t.Errorf("mode %s, want %s", m, tc.mode)
				}
			}
		})
	}
}

const (
	esSession = "projects/acme-bot/agent/sessions/5f1c-9a"
	// esHandoff is the ES request of docs/google-bot.md: an intent marked
	// for live agent handoff, with name and email session parameters.
	esHandoff = `{"session":"projects/acme-bot/agent/sessions/5f1c-9a","responseId":"r-1",
 "queryResult":{"queryText":"I want to talk to an agent","languageCode":"en",
  "parameters":{"email":"ana@example.com","name":"Ana Souza"},
  "fulfillmentMessages":[{"text":{"text":["Connecting you to an agent"]}}],
  "outputContexts":[{"name":"projects/acme-bot/agent/sessions/5f1c-9a/contexts/live-agent","lifespanCount":5}],
  "intent":{"name":"projects/acme-bot/agent/intents/123","displayName":"live-agent","liveAgentHandoff":true},
  "intentDetectionConfidence":0.93},
 "originalDetectIntentRequest":{"source":"DIALOGFLOW_CONSOLE","payload":{}}}`
	esCtx = `"outputContexts":[{"name":"projects/acme-bot/agent/sessions/5f1c-9a/contexts/live-agent","lifespanCount":50}]`
)

// esTurnBody is a plain ES turn on esSession.
func esTurnBody(responseID, text, lang string) string {
	return `{"session":"` + esSession + `","responseId":"` + responseID + `","queryResult":{"queryText":"` + text +
		`","languageCode":"` + lang + `","intent":{"name":"projects/acme-bot/agent/intents/9","displayName":"catch-all"},"parameters":{}}}`
}

func TestDialogflowES(t *testing.T) {
	esSample := "projects/project-id-123/agent/sessions/session-id-123"
	runCases(t, []gwCase{
		{
			name:   "live agent handoff intent with session parameters",
			req:    request{path: "/dialogflow/es", body: esHandoff},
			status: 200,
			body:   `{"fulfillmentText":"` + handoffReply + `","fulfillmentMessages":[{"text":{"text":["` + handoffReply + `"]}}],` + esCtx + `}`,
			conv:   esSession,
			events: []wantEvent{{
				id: deriveID("dialogflow-es", esSession, "r-1"), typ: handoff.TypeHandoffRequested,
				data: `{"customer":{"name":"Ana Souza","email":"ana@example.com"},
				"reason":"live_agent_handoff","language":"en",
				"reply_to":{"channel":"dialogflow-es","address":"` + esSession + `"},"text":"I want to talk to an agent"}`,
			}},
			mode: handoff.ModePending,
		},
		{
			name: "configured intent, group from config",
			cfg: func(c *Config) {
				c.ESHandoffIntents = []string{"Matched Intent Name"}
				g := 7
				c.Group, c.Groups = &g, map[string]int{"pt": 3}
			},
			req:    request{path: "/dialogflow/es", body: readTestdata(t, "es/df-fulfillment-webhook-json_requests_v2_request.json")},
			status: 200,
			body: `{"fulfillmentText":"` + handoffReply + `","fulfillmentMessages":[{"text":{"text":["` + handoffReply + `"]}}],
				"outputContexts":[{"name":"projects/your-agents-project-id/agent/sessions/88d13aa8-2999-4f71-b233-39cbf3a824a0/contexts/live-agent","lifespanCount":50}]}`,
			conv: "projects/your-agents-project-id/agent/sessions/88d13aa8-2999-4f71-b233-39cbf3a824a0",
			events: []wantEvent{{
				id: deriveID("dialogflow-es", "projects/your-agents-project-id/agent/sessions/88d13aa8-2999-4f71-b233-39cbf3a824a0", "ea3d77e8-ae27-41a4-9e1d-174bd461b68c"), typ: handoff.TypeHandoffRequested,
				data: `{"group":7,"reason":"intent","language":"en",
				"reply_to":{"channel":"dialogflow-es","address":"projects/your-agents-project-id/agent/sessions/88d13aa8-2999-4f71-b233-39cbf3a824a0"},"text":"user's original query to your agent"}`,
			}},
			mode: handoff.ModePending,
		},
		{
			name: "phrase after bot turns: transcript carries the earlier turns",
			before: []request{
				{path: "/dialogflow/es", body: readTestdata(t, "es/golang-samples_basic_webhook_test_request_get-agent-name.json")},
				// A retry of the same turn is recorded once.
				{path: "/dialogflow/es", body: readTestdata(t, "es/golang-samples_basic_webhook_test_request_get-agent-name.json")},
			},
			req: request{path: "/dialogflow/es", body: `{"session":"` + esSample + `","responseId":"r-2",
				"queryResult":{"queryText":"Can I talk to a HUMAN?","languageCode":"en","fulfillmentText":"Sorry, I did not get that.","intent":{"displayName":"Default Fallback Intent"}}}`},
			status: 200,
			body: `{"fulfillmentText":"` + handoffReply + `","fulfillmentMessages":[{"text":{"text":["` + handoffReply + `"]}}],
				"outputContexts":[{"name":"` + esSample + `/contexts/live-agent","lifespanCount":50}]}`,
			conv: esSample,
			events: []wantEvent{{
				id: deriveID("dialogflow-es", esSample, "r-2"), typ: handoff.TypeHandoffRequested,
				data: `{"transcript":[
					{"author":"user","text":"what is your name?",` + at + `},{"author":"bot","text":"My name is Dialogflow!",` + at + `}],
				"reason":"phrase","language":"en","reply_to":{"channel":"dialogflow-es","address":"` + esSample + `"},"text":"Can I talk to a HUMAN?"}`,
			}},
			mode: handoff.ModePending,
		},
		{
			name:   "ordinary bot turn: nothing published, bot answers",
			req:    request{path: "/dialogflow/es", body: readTestdata(t, "es/golang-samples_basic_webhook_test_request_get-agent-name.json")},
			status: 200, body: `{}`, conv: esSample, mode: handoff.ModeBot,
		},
		{
			name:   "whole words only: 'agents of shield' is no handoff",
			req:    request{path: "/dialogflow/es", body: esTurnBody("r-5", "I love agents of shield", "en")},
			status: 200, body: `{}`, conv: esSession, mode: handoff.ModeBot,
		},
		{
			name:   "with an agent: forwarded, empty answer so the bot stays silent",
			setup:  func(e *env) { e.setMode(esSession, handoff.ModeAgent) },
			req:    request{path: "/dialogflow/es", body: esTurnBody("r-6", "my order is 1234", "en")},
			status: 200,
			body:   `{"fulfillmentMessages":[{"text":{"text":[""]}}],` + esCtx + `}`,
			conv:   esSession,
			events: []wantEvent{{id: deriveID("dialogflow-es", esSession, "r-6"), typ: handoff.TypeMessageUser, data: `{"text":"my order is 1234"}`}},
			mode:   handoff.ModeAgent,
		},
		{
			name:   "pending: 'cancel my subscription' goes to the agent, and a handoff phrase is just a message",
			cfg:    func(c *Config) { c.AckReply = map[string]string{"pt": "Recebido"} },
			setup:  func(e *env) { e.setMode(esSession, handoff.ModePending) },
			before: []request{{path: "/dialogflow/es", body: esTurnBody("r-7", "cancel my subscription", "pt-BR")}},
			req:    request{path: "/dialogflow/es", body: esTurnBody("r-8", "agent", "pt-BR")},
			status: 200,
			body:   `{"fulfillmentText":"Recebido","fulfillmentMessages":[{"text":{"text":["Recebido"]}}],` + esCtx + `}`,
			conv:   esSession,
			events: []wantEvent{
				{typ: handoff.TypeMessageUser, data: `{"text":"cancel my subscription"}`},
				{typ: handoff.TypeMessageUser, data: `{"text":"agent"}`},
			},
			mode: handoff.ModePending,
		},
		{
			name: "cancel phrase while queued, accents and case ignored",
			cfg: func(c *Config) {
				c.CancelPhrases = map[string][]string{"": {"cancel"}, "pt": {"voltar ao robô"}}
			},
			setup:  func(e *env) { e.setMode(esSession, handoff.ModeQueued) },
			req:    request{path: "/dialogflow/es", body: esTurnBody("r-9", "Voltar ao ROBO!", "pt-BR")},
			status: 200,
			body: `{"fulfillmentText":"` + cancelReply + `","fulfillmentMessages":[{"text":{"text":["` + cancelReply + `"]}}],
				"outputContexts":[{"name":"` + esSession + `/contexts/live-agent","lifespanCount":0}]}`,
			conv:   esSession,
			events: []wantEvent{{id: deriveID("dialogflow-es", esSession, "r-9"), typ: handoff.TypeHandoffCancelled, data: `{"reason":"phrase"}`}},
			mode:   handoff.ModeBot,
		},
		{
			name:   "cancel intent",
			cfg:    func(c *Config) { c.ESCancelIntents = []string{"back-to-bot"} },
			setup:  func(e *env) { e.setMode(esSession, handoff.ModeAgent) },
			req:    request{path: "/dialogflow/es", body: strings.Replace(esTurnBody("r-10", "I am done here", "en"), "catch-all", "back-to-bot", 1)},
			status: 200,
			body: `{"fulfillmentText":"` + cancelReply + `","fulfillmentMessages":[{"text":{"text":["` + cancelReply + `"]}}],
				"outputContexts":[{"name":"` + esSession + `/contexts/live-agent","lifespanCount":0}]}`,
			conv:   esSession,
			events: []wantEvent{{typ: handoff.TypeHandoffCancelled, data: `{"reason":"intent"}`}},
			mode:   handoff.ModeBot,
		},
	})
}

const (
	cxSession = "projects/acme/locations/global/agents/a1/sessions/s-77"
	// cxHandoff is the CX request of docs/google-bot.md.
	cxHandoff = `{"detectIntentResponseId":"d-1","text":"talk to a human please","languageCode":"en",
 "fulfillmentInfo":{"tag":"live-agent-handoff"},
 "intentInfo":{"lastMatchedIntent":"projects/acme/locations/global/agents/a1/intents/9","displayName":"live-agent","confidence":0.9},
 "pageInfo":{"currentPage":"projects/acme/locations/global/agents/a1/flows/f/pages/p","displayName":"Agent"},
 "sessionInfo":{"session":"projects/acme/locations/global/agents/a1/sessions/s-77","parameters":{"email":"ana@example.com","name":"Ana Souza"}},
 "messages":[{"liveAgentHandoff":{"metadata":{"reason":"billing"}}}]}`
)

func cxTurnBody(id, text, tag string) string {
	return `{"detectIntentResponseId":"` + id + `","text":"` + text + `","languageCode":"en","fulfillmentInfo":{"tag":"` + tag +
		`"},"sessionInfo":{"session":"` + cxSession + `","parameters":{"live_agent":true}},"messages":[{"text":{"text":["Bot says hi"]},"responseType":"HANDLER_PROMPT","source":"VIRTUAL_AGENT"}]}`
}

func TestDialogflowCX(t *testing.T) {
	sampleSession := "projects/my-project/locations/us-central1/agents/7623161c-adfd-4acc-9de7-66946d751595/sessions/da0a27-077-9f8-cf7-56abf3b65"
	runCases(t, []gwCase{
		{
			name:   "liveAgentHandoff message with reason and session parameters",
			req:    request{path: "/dialogflow/cx", body: cxHandoff},
			status: 200,
			body: `{"fulfillmentResponse":{"messages":[{"text":{"text":["` + handoffReply + `"]}},{"liveAgentHandoff":{"metadata":{"reason":"billing"}}}],"mergeBehavior":"REPLACE"},
				"sessionInfo":{"parameters":{"live_agent":true}}}`,
			conv: cxSession,
			events: []wantEvent{{
				id: deriveID("dialogflow-cx", cxSession, "d-1"), typ: handoff.TypeHandoffRequested,
				data: `{"customer":{"name":"Ana Souza","email":"ana@example.com"},
				"reason":"billing","language":"en","reply_to":{"channel":"dialogflow-cx","address":"` + cxSession + `"},"text":"talk to a human please"}`,
			}},
			mode: handoff.ModePending,
		},
		{
			name: "handoff tag, per-language reply and group, @sys.person name",
			cfg: func(c *Config) {
				c.HandoffReply = map[string]string{"": "Connecting", "PT": "Um atendente vai falar com você."}
				c.Groups = map[string]int{"pt": 3}
			},
			req: request{path: "/dialogflow/cx", body: `{"detectIntentResponseId":"d-2","text":"Preciso de ajuda com a fatura","languageCode":"pt-BR",
				"fulfillmentInfo":{"tag":"live-agent-handoff"},
				"sessionInfo":{"session":"` + cxSession + `","parameters":{"name":{"name":"Ana"},"email":"ana@example.com","cpf":"123"}},
				"messages":[{"text":{"text":["Um momento"],"redactedText":["Um momento"]},"source":"VIRTUAL_AGENT"}]}`},
			status: 200,
			body: `{"fulfillmentResponse":{"messages":[{"text":{"text":["Um atendente vai falar com você."]}},{"liveAgentHandoff":{"metadata":{"reason":"tag"}}}],"mergeBehavior":"REPLACE"},
				"sessionInfo":{"parameters":{"live_agent":true}}}`,
			conv: cxSession,
			events: []wantEvent{{
				typ: handoff.TypeHandoffRequested,
				data: `{"customer":{"name":"Ana","email":"ana@example.com"},
				"group":3,"reason":"tag","language":"pt-BR","reply_to":{"channel":"dialogflow-cx","address":"` + cxSession + `"},"text":"Preciso de ajuda com a fatura"}`,
			}},
			mode: handoff.ModePending,
		},
		{
			name:   "request with undocumented fields: ignored, bot answers",
			req:    request{path: "/dialogflow/cx", body: readTestdata(t, "cx/generated_cx_request_with_undocumented_fields.json")},
			status: 200, body: `{}`, conv: sampleSession, mode: handoff.ModeBot,
		},
		{
			name:   "with an agent: forwarded, queued bot messages replaced by nothing",
			setup:  func(e *env) { e.setMode(cxSession, handoff.ModeAgent) },
			req:    request{path: "/dialogflow/cx", body: cxTurnBody("d-4", "here is my order 42", "live-agent-message")},
			status: 200,
			body:   `{"fulfillmentResponse":{"messages":[],"mergeBehavior":"REPLACE"},"sessionInfo":{"parameters":{"live_agent":true}}}`,
			conv:   cxSession,
			events: []wantEvent{{id: deriveID("dialogflow-cx", cxSession, "d-4"), typ: handoff.TypeMessageUser, data: `{"text":"here is my order 42"}`}},
			mode:   handoff.ModeAgent,
		},
		{
			name:   "cancel tag: parameter deleted",
			setup:  func(e *env) { e.setMode(cxSession, handoff.ModeAgent) },
			req:    request{path: "/dialogflow/cx", body: cxTurnBody("d-5", "thanks, bye", "live-agent-cancel")},
			status: 200,
			body: `{"fulfillmentResponse":{"messages":[{"text":{"text":["` + cancelReply + `"]}}],"mergeBehavior":"REPLACE"},
				"sessionInfo":{"parameters":{"live_agent":null}}}`,
			conv:   cxSession,
			events: []wantEvent{{typ: handoff.TypeHandoffCancelled, data: `{"reason":"tag"}`}},
			mode:   handoff.ModeBot,
		},
	})
}

const (
	chatDM = `{"type":"MESSAGE","eventTime":"2026-11-20T10:00:00.000000Z",
 "space":{"name":"spaces/AAAAx","type":"DM","spaceType":"DIRECT_MESSAGE","singleUserBotDm":true},
 "message":{"name":"spaces/AAAAx/messages/m1","text":"talk to an agent","argumentText":"talk to an agent",
            "thread":{"name":"spaces/AAAAx/threads/t1"},"sender":{"name":"users/1234","displayName":"Ana Souza","email":"ana@example.com","type":"HUMAN"}},
 "user":{"name":"users/1234","displayName":"Ana Souza","email":"ana@example.com","type":"HUMAN"}}`
	chatCard = `{"type":"CARD_CLICKED","eventTime":"2026-11-20T10:01:00.000000Z",
 "space":{"name":"spaces/AAAAx","spaceType":"DIRECT_MESSAGE"},
 "message":{"name":"spaces/AAAAx/messages/m2","thread":{"name":"spaces/AAAAx/threads/t1"}},
 "user":{"name":"users/1234","displayName":"Ana Souza","email":"ana@example.com","type":"HUMAN"},
 "action":{"actionMethodName":"handoff","parameters":[{"key":"reason","value":"card"}]},
 "common":{"userLocale":"en"}}`
	anaCustomer = `"customer":{"name":"Ana Souza","email":"ana@example.com"}`
)

func TestGoogleChat(t *testing.T) {
	room := "spaces/AAAApLddd99"
	roomThread := "spaces/AAAApLddd99/threads/asdfsdfd"
	inRoom := readTestdata(t, "chat-classic/hubot_hangouts-chat-messages_dm-in-room.json")
	samCustomer := `"customer":{"name":"Sam Rivera","email":"sam@example.com"}`
	runCases(t, []gwCase{
		{
			name:   "classic DM: the space is the conversation",
			req:    request{path: "/google-chat", body: chatDM},
			status: 200,
			body:   `{"text":"` + handoffReply + `","thread":{"name":"spaces/AAAAx/threads/t1"}}`,
			conv:   "spaces/AAAAx",
			events: []wantEvent{{
				id: deriveID("google-chat", "spaces/AAAAx", "spaces/AAAAx/messages/m1"), typ: handoff.TypeHandoffRequested,
				data: `{` + anaCustomer + `,"reason":"phrase","reply_to":{"channel":"google-chat","address":"spaces/AAAAx"},"text":"talk to an agent"}`,
			}},
			mode: handoff.ModePending,
		},
		{
			name:   "threaded space: the thread is the conversation, mention stripped",
			req:    request{path: "/google-chat", body: strings.Replace(inRoom, `"argumentText": " hi"`, `"argumentText": " can I talk to a human"`, 1)},
			status: 200,
			body:   `{"text":"` + handoffReply + `","thread":{"name":"` + roomThread + `"}}`,
			conv:   roomThread,
			events: []wantEvent{{
				typ:  handoff.TypeHandoffRequested,
				data: `{` + samCustomer + `,"reason":"phrase","reply_to":{"channel":"google-chat","address":"` + roomThread + `"},"text":"can I talk to a human"}`,
			}},
			mode: handoff.ModePending,
		},
		{
			name:   "threaded space, ordinary message: help text, nothing published",
			req:    request{path: "/google-chat", body: inRoom},
			status: 200,
			body:   `{"text":"` + chatBotReply + `","thread":{"name":"` + roomThread + `"}}`,
			conv:   roomThread, mode: handoff.ModeBot,
		},
		{
			name:   "classic card click",
			req:    request{path: "/google-chat", body: chatCard},
			status: 200,
			body:   `{"text":"` + handoffReply + `","thread":{"name":"spaces/AAAAx/threads/t1"}}`,
			conv:   "spaces/AAAAx",
			events: []wantEvent{{
				typ:  handoff.TypeHandoffRequested,
				data: `{` + anaCustomer + `,"reason":"card","language":"en","reply_to":{"channel":"google-chat","address":"spaces/AAAAx"}}`,
			}},
			mode: handoff.ModePending,
		},
		{
			name:   "classic cancel card while with an agent",
			setup:  func(e *env) { e.setMode("spaces/AAAAx", handoff.ModeAgent) },
			req:    request{path: "/google-chat", body: strings.Replace(chatCard, `"actionMethodName":"handoff"`, `"actionMethodName":"cancel_handoff"`, 1)},
			status: 200,
			body:   `{"text":"` + cancelReply + `","thread":{"name":"spaces/AAAAx/threads/t1"}}`,
			conv:   "spaces/AAAAx",
			events: []wantEvent{{typ: handoff.TypeHandoffCancelled, data: `{"reason":"card"}`}},
			mode:   handoff.ModeBot,
		},
		{
			name:   "classic DM with an agent: forwarded, no reply",
			setup:  func(e *env) { e.setMode(room, handoff.ModeAgent) },
			req:    request{path: "/google-chat", body: readTestdata(t, "chat-classic/hubot_hangouts-chat-messages_dm.json")},
			status: 200, body: `{}`, conv: room,
			events: []wantEvent{{id: deriveID("google-chat", room, "spaces/AAAApLddd99/messages/asdfsad.asdfasd"), typ: handoff.TypeMessageUser, data: `{"text":"hi"}`}},
			mode:   handoff.ModeAgent,
		},
		{
			name:   "add-on message: reply in the add-on shape",
			req:    request{path: "/google-chat", body: readTestdata(t, "chat-addon/generated_addon_message_event.json")},
			status: 200,
			body:   `{"hostAppDataAction":{"chatDataAction":{"createMessageAction":{"message":{"text":"` + handoffReply + `"}}}}}`,
			conv:   "spaces/AAAAdmSpace1",
			events: []wantEvent{{
				typ:  handoff.TypeHandoffRequested,
				data: `{"customer":{"name":"Jane Doe","email":"jane@example.com"},"reason":"phrase","language":"en","reply_to":{"channel":"google-chat","address":"spaces/AAAAdmSpace1"},"text":"talk to an agent"}`,
			}},
			mode: handoff.ModePending,
		},
		{
			name:   "add-on button click on a configured function",
			cfg:    func(c *Config) { c.ChatHandoffActions = []string{"handoff", "talkToAgent"} },
			req:    request{path: "/google-chat", body: readTestdata(t, "chat-addon/generated_addon_button_clicked_event.json")},
			status: 200,
			body:   `{"hostAppDataAction":{"chatDataAction":{"createMessageAction":{"message":{"text":"` + handoffReply + `"}}}}}`,
			conv:   "spaces/AAAAdmSpace1",
			events: []wantEvent{{
				typ:  handoff.TypeHandoffRequested,
				data: `{"customer":{"name":"Jane Doe","email":"jane@example.com"},"reason":"card","language":"en","reply_to":{"channel":"google-chat","address":"spaces/AAAAdmSpace1"}}`,
			}},
			mode: handoff.ModePending,
		},
		{
			name:   "add-on button click on another function: ignored",
			req:    request{path: "/google-chat", body: readTestdata(t, "chat-addon/generated_addon_button_clicked_event.json")},
			status: 200, body: `{}`, conv: "spaces/AAAAdmSpace1", mode: handoff.ModeBot,
		},
		{
			name:   "added to space: help text",
			req:    request{path: "/google-chat", body: readTestdata(t, "chat-classic/hubot_hangouts-chat-messages_add-to-room.json")},
			status: 200, body: `{"text":"` + chatBotReply + `"}`, conv: room,
		},
		{
			name:   "removed from space while with an agent: cancelled",
			setup:  func(e *env) { e.setMode("spaces/AAABK3JclZY", handoff.ModeAgent) },
			req:    request{path: "/google-chat", body: readTestdata(t, "chat-classic/hubot_hangouts-chat-messages_remove-from-room.json")},
			status: 200, body: `{}`, conv: "spaces/AAABK3JclZY",
			events: []wantEvent{{typ: handoff.TypeHandoffCancelled, data: `{"reason":"removed_from_space"}`}},
			mode:   handoff.ModeBot,
		},
		{
			name:   "removed from space with the bot: nothing",
			req:    request{path: "/google-chat", body: readTestdata(t, "chat-classic/hubot_hangouts-chat-messages_remove-from-room.json")},
			status: 200, body: `{}`, conv: "spaces/AAABK3JclZY",
		},
	})
}

func TestREST(t *testing.T) {
	conv := "acme/web/sessions/s-9"
	path := "/v1/conversations/acme%2Fweb%2Fsessions%2Fs-9"
	idem := map[string]string{"Idempotency-Key": "key-1"}
	runCases(t, []gwCase{
		{
			name:   "handoff",
			req:    request{path: path + "/handoff", body: `{"customer":{"name":"Ana","fields":{"plan":"gold"}},"reason":"billing","language":"en","text":"help","unknown":1}`, headers: idem},
			status: http.StatusAccepted,
			body:   `{"id":"` + deriveID("rest", "handoff.requested", conv, "key-1") + `","stream":"HANDOFF_IN","sequence":1,"duplicate":false}`,
			conv:   conv,
			events: []wantEvent{{
				id: deriveID("rest", "handoff.requested", conv, "key-1"), typ: handoff.TypeHandoffRequested,
				data: `{"customer":{"name":"Ana","fields":{"plan":"gold"}},"reason":"billing","language":"en","text":"help","reply_to":{"channel":"rest"}}`,
			}},
			mode: handoff.ModePending,
		},
		{
			name:   "handoff retried with the same key: stored once",
			before: []request{{path: path + "/handoff", body: `{}`, headers: idem}},
			req:    request{path: path + "/handoff", body: `{}`, headers: idem},
			status: http.StatusAccepted,
			body:   `{"id":"` + deriveID("rest", "handoff.requested", conv, "key-1") + `","stream":"HANDOFF_IN","sequence":1,"duplicate":true}`,
			conv:   conv,
			events: []wantEvent{{typ: handoff.TypeHandoffRequested, data: `{"reason":"api","reply_to":{"channel":"rest"}}`}},
			mode:   handoff.ModePending,
		},
		{
			name:   "message",
			req:    request{path: path + "/messages", body: `{"text":"hello","attachments":["https://example.com/a.png"]}`, headers: idem},
			status: http.StatusAccepted,
			body:   `{"id":"` + deriveID("rest", "message.user", conv, "key-1") + `","stream":"HANDOFF_IN","sequence":1,"duplicate":false}`,
			conv:   conv,
			events: []wantEvent{{typ: handoff.TypeMessageUser, data: `{"text":"hello","attachments":["https://example.com/a.png"]}`}},
		},
		{
			name:   "cancel with an empty body",
			setup:  func(e *env) { e.setMode(conv, handoff.ModeAgent) },
			req:    request{path: path + "/cancel", headers: idem},
			status: http.StatusAccepted,
			body:   `{"id":"` + deriveID("rest", "handoff.cancelled", conv, "key-1") + `","stream":"HANDOFF_IN","sequence":1,"duplicate":false}`,
			conv:   conv,
			events: []wantEvent{{typ: handoff.TypeHandoffCancelled, data: `{}`}},
			mode:   handoff.ModeBot,
		},
	})
}

func TestRESTGetConversation(t *testing.T) {
	e := newEnv(t, nil)
	conv := "acme/web/sessions/s-9"
	path := "/v1/conversations/" + url.PathEscape(conv)
	code, body := e.do(request{method: "GET", path: path})
	if code != http.StatusOK {
		t.Fatalf("status %d: %s", code, body)
	}
	jsonEqual(t, "new conversation", body, `{"id":"`+conv+`","mode":"bot","with_agent":false,"version":0}`)

	if code, body := e.do(request{path: path + "/handoff", body: `{"group":2}`}); code != http.StatusAccepted {
		t.Fatalf("handoff: %d %s", code, body)
	}
	code, body = e.do(request{method: "GET", path: path})
	if code != http.StatusOK {
		t.Fatalf("status %d: %s", code, body)
	}
	var view map[string]any
	if err := json.Unmarshal(body, &view); err != nil {
		t.Fatal(err)
	}
	if view["id"] != conv || view["mode"] != "pending" || view["with_agent"] != true || view["version"] != float64(1) {
		t.Errorf("after handoff: %s", body)
	}
	jsonEqual(t, "reply_to", mustMarshal(t, view["reply_to"]), `{"channel":"rest"}`)
}

func mustMarshal(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
