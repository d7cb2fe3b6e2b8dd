"""The agent: answers questions with an LLM and the announced tools, locally and over MQTT.

Locally: ``await agent.query("...")`` (text, or a pydantic model with ``output=``), or
``await agent.answer(question)`` for the whole result (tool calls, usage, conversation id);
:class:`~argentic.agents.client.AgentClient` has the same two over MQTT.

Over MQTT, inside ``async with agent:`` (or between ``start()`` and ``stop()``):

- questions arrive on ``{ns}/agents/{role}/questions`` (a shared subscription, so replicas of a
  role share them); the :class:`~argentic.protocol.Answer`, or an
  :class:`~argentic.protocol.ErrorReply`, goes to the question's ``reply_to``;
- progress events and streamed tokens go to ``{ns}/agents/{role}/events/{question_id}``;
- a retained :class:`~argentic.protocol.Presence` on ``{ns}/agents/{role}/status`` says the agent
  is online and names its client, whose last will makes it stale if the process dies (see
  :mod:`argentic.messaging.peers`), so agents and tool services can share one messager.

Whom it may ask is an option like the others: with ``delegates`` (roles) its model gets a tool
that asks each over MQTT, and with ``ask_back`` an ``ask_back`` tool that puts its task in
``input-required`` until its asker's ``task_input`` comes (:mod:`argentic.agents.delegation`);
its card in the presence says both. A team's agents are such agents.

A payload that is not JSON cannot be answered (there is no ``reply_to`` to read): the messager
logs and drops it. A JSON object that is not a valid question but names a ``reply_to`` gets an
ErrorReply with code ``malformed_request``.

How a question becomes what the model reads is the agent's
:class:`~argentic.agents.messages.MessageBuilder` (``message_builder=``; the visual agent's attaches
video frames); :meth:`Agent.call_llm` is the one place the model is called. What the model needs
(a tool policy for a small base model) comes from its profile (:mod:`argentic.llm.profiles`)
unless set here.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from argentic.agents.conversation import ConversationStore, StoreTurn, conversation_key
from argentic.agents.delegation import Asker, Delegation, think_with
from argentic.agents.events import MqttEvents
from argentic.agents.loop import EventSink, LoopPolicy, LoopState, NullEvents, ToolLoop
from argentic.agents.messages import MessageBuilder
from argentic.agents.tasks import AgentTask, TaskBoard
from argentic.config import AgentConfig, AgentOptions, with_options
from argentic.errors import (
    AgentError,
    BusyError,
    InvalidTopicError,
    LLMError,
    MalformedMessageError,
    StorageError,
    TaskCanceledError,
    TaskNotFoundError,
    UnknownToolError,
)
from argentic.errors_wire import error_info as error_info  # also importable from here, as before
from argentic.errors_wire import failed_result
from argentic.lifecycle import Running
from argentic.llm import (
    ChatMessage,
    ChatRequest,
    ChatResponse,
    LLMProvider,
    OutputSpec,
    StreamEnd,
    TextDelta,
    ToolDefinition,
)
from argentic.llm.profiles import profile_for
from argentic.messaging import Messager, Will
from argentic.messaging.dispatch import sender_key
from argentic.observability import metrics, tracing
from argentic.protocol import (
    AgentCard,
    Answer,
    ErrorReply,
    Message,
    Presence,
    Question,
    TaskGet,
    ToolCallRecord,
    ToolResult,
    Topics,
    Usage,
    new_id,
    topic_level,
)
from argentic.storage import Claim, ConversationRecords, Lease, Once, Step, Store, TaskRecords
from argentic.storage.records import CLAIM_TTL_S
from argentic.tools import LocalTools, ToolManager
from argentic.tools.local import ToolLike
from argentic.validation import describe_validation_error

log = logging.getLogger(__name__)

T = TypeVar("T", bound=BaseModel)

#: Seconds a stopping agent gives its running tasks to send their ``canceled`` replies.
STOP_GRACE_S = 5.0
#: Seconds a copy of a question another replica works on waits for its reply (or to take it over
#: when that replica dies), when the question has no deadline.
COPY_WAIT_S = 3600.0


class IncomingQuestion(Message):
    """A question as received: lenient, so that an invalid one can still be answered with an error."""

    model_config = ConfigDict(extra="allow", frozen=True)
    type: str = "question"
    id: Any = Field(default_factory=new_id)  # any id gets its error reply


@dataclass
class AgentResult:
    question_id: str
    conversation_id: str
    text: str
    data: Any = None
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    steps: int = 0


class Agent(Running):
    """An LLM with tools, serving one role: ``async with Agent(llm=..., messager=...) as agent:``."""

    def __init__(
        self,
        llm: LLMProvider,
        messager: Messager | None = None,
        tool_manager: ToolManager | None = None,
        role: str = "assistant",
        system_prompt: str | None = None,
        *,
        options: AgentOptions | None = None,
        tools: Sequence[ToolLike] | LocalTools | None = None,
        message_builder: MessageBuilder | None = None,
        store: Store | ConversationRecords | None = None,
        **overrides: Any,
    ) -> None:
        """``options`` (an :class:`~argentic.config.AgentOptions`, the ``agent`` config section or
        a team role) say how the agent works; keywords of the same names override them
        (``Agent(llm=llm, max_steps=3)``), as do ``tool_names=`` for ``tools`` (the announced
        tools it may use) and ``settings=`` for ``sampling``. ``tools=`` are local tools (see
        :class:`~argentic.tools.LocalTools`). With ``store`` (a shared
        :class:`~argentic.storage.Store`) conversations live there, so any replica of the role
        continues any conversation; without it, in this agent's memory."""
        self.options = with_options(options or AgentOptions(), overrides)
        options = self.options
        self.llm = llm
        self.messager = messager
        self.tool_manager = tool_manager
        #: Tools called in this process (functions or BaseTools): no broker hop. They come first
        #: when a remote tool has the same name.
        self.local_tools = tools if isinstance(tools, LocalTools) else LocalTools(tools or ())
        self.role = topic_level(role, "agent role")
        self.system_prompt = system_prompt if system_prompt is not None else options.system_prompt
        # None: the model's profile decides (looked up once the model's name is known).
        self._tool_choices = (options.tool_choice, options.followup_tool_choice)
        self._profiled = asyncio.Lock()
        self._profile_applied = False
        self.policy = LoopPolicy(
            max_steps=options.max_steps,
            tool_choice=options.tool_choice or "auto",
            followup_tool_choice=options.followup_tool_choice or "auto",
            max_repeated_calls=options.max_repeated_calls,
        )
        self.tool_timeout_s = options.tool_timeout_s
        self.tool_names = list(options.tools) if options.tools is not None else None
        #: Sampling over the provider's defaults (a request's own settings win).
        self.settings = options.sampling
        self.message_builder = message_builder or MessageBuilder()
        records = ConversationRecords(store) if isinstance(store, Store) else store
        self.conversations = ConversationStore(
            max_conversations=options.max_conversations,
            max_messages=options.max_history_messages,
            records=records,
        )
        #: Each MQTT question's task on record (with a store): ``task_get`` answers from it.
        self.task_records = TaskRecords(records.store) if records is not None else None
        #: With a store, each question is answered once across the role's replicas: the replica
        #: that claims it works on it (the claim renewed meanwhile, so it lapses soon after a
        #: replica dies and a resend is taken by another), and its reply is kept for duplicates.
        self.once = (
            Once(
                records.store,
                claim_ttl_s=min(records.lease_ttl_s, CLAIM_TTL_S),
                reply_ttl_s=self.task_records.ttl_s,
            )
            if records is not None and self.task_records is not None
            else None
        )
        #: Questions from MQTT run as tasks (see argentic.agents.tasks): at most ``max_tasks`` work
        #: at once, ``max_waiting_tasks`` more wait for a slot, beyond that they are refused.
        self.max_depth = options.max_depth
        self.max_tasks = options.max_tasks
        self.max_waiting_tasks = options.max_waiting_tasks
        self._slots = asyncio.Semaphore(options.max_tasks)
        # The store work of the questions from MQTT being answered, by sender_key (see _serve).
        self._turns: dict[str, StoreTurn] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._joined = False  # on the messager's task board (start got that far)
        self._subscription: Any = None
        self._presence_watch: Any = None
        self._task_gets: Any = None
        self._presence_holder: str | None = None  # the client whose presence the role's topic holds
        self._cancel_leave: Callable[[], None] = lambda: None
        self._cancel_watch: Callable[[], None] = lambda: None
        #: The tools that ask over MQTT: the roles it may ask (``delegates``) and, with
        #: ``ask_back``, its asker (see argentic.agents.delegation). None without a messager.
        self.delegation: Delegation | None = None
        if messager is not None and (options.delegates or options.ask_back):
            asker = Asker(self.role, messager, think_with(self), self.system_prompt)
            self.delegation = Delegation(
                asker,
                options.delegate_descriptions(),
                supervise=options.supervise,
                ask_back=options.ask_back,
                timeout_s=options.delegate_timeout_s,
            )
        #: What the retained presence tells others about this role.
        self.card: AgentCard | None = AgentCard(
            description=options.description,
            model=llm.model_name or None,
            tools=list(self.tool_names or []),
            delegates=list(options.delegates),
            asks_back=options.ask_back,
            max_depth=self.max_depth,
        )

    @classmethod
    def from_config(
        cls,
        config: AgentConfig,
        *,
        llm: LLMProvider,
        messager: Messager | None = None,
        tool_manager: ToolManager | None = None,
        **overrides: Any,
    ) -> Agent:
        """The agent the ``agent`` section describes; ``overrides`` as for the constructor."""
        role = overrides.pop("role", config.role)
        return cls(llm, messager, tool_manager, role, options=config, **overrides)

    async def apply_profile(self) -> LoopPolicy:
        """The loop policy with what the model's profile sets and the agent left open (once)."""
        if self._profile_applied:
            return self.policy
        async with self._profiled:
            if not self._profile_applied:
                profile = profile_for(await self.llm.resolve_model())
                first, followup = self._tool_choices
                self.policy = dataclasses.replace(
                    self.policy,
                    tool_choice=first or profile.tool_choice or "auto",
                    followup_tool_choice=followup or profile.followup_tool_choice or "auto",
                    restate_tool_results=bool(profile.restate_tool_results),
                    parallel_tool_calls=profile.parallel_tool_calls,
                    json_answer=bool(profile.json_answer),
                    answer_then_shape=bool(profile.answer_then_shape),
                    quote_tool_results=bool(profile.quote_tool_results),
                    ground_arguments=bool(profile.ground_arguments),
                    max_tokens=self.llm.defaults.merged(self.settings).max_tokens,
                )
                self._profile_applied = True
        return self.policy

    @property
    def serving(self) -> bool:
        """Whether it takes questions from MQTT now (between :meth:`start` and :meth:`stop`)."""
        return self._subscription is not None

    @staticmethod
    def will(topics: Topics, role: str, client_id: str | None = None) -> Will:
        """A last will for a messager of this agent's own: presence ``online: false``, retained.

        Not needed on a shared messager: the presence names the client, whose will covers it."""
        return Will(
            topic=topics.agent_status(role),
            message=Presence(role=role, online=False, client_id=client_id),
            retain=True,
        )

    # --- the MQTT face ------------------------------------------------------------------------

    async def start(self) -> None:
        """Serve questions from MQTT and announce presence (the messager must be connected).

        Without a messager this only looks up the model's profile."""
        await self.apply_profile()
        if self.messager is None or self._joined:
            return
        peers = self.messager.peers
        await peers.start()
        self._cancel_watch = peers.watch(self._on_client_gone)
        await self.messager.shared(TaskBoard).serve(self.role)
        self._joined = True
        self._subscription = await self.messager.subscribe(
            self.messager.topics.agent_questions(self.role),
            self._on_question,
            model=IncomingQuestion,
            shared_group=self.role,
        )
        # Replicas share one retained presence per role: when another one leaves (its stop or its
        # will says offline), those still serving say online again.
        self._presence_watch = await self.messager.subscribe(
            self.messager.topics.agent_status(self.role),
            self._on_presence,
            model=Presence,
            on_invalid=self._repair_presence,
        )
        self._task_gets = await self.messager.subscribe(
            self.messager.topics.agent_tasks(self.role),
            self._on_task_get,
            model=TaskGet,
            shared_group=self.role,
        )
        self._cancel_leave = self.messager.before_disconnect(self.stop)
        await self._publish_presence(True)
        log.info("agent %s serving %s", self.role, self.messager.topics.agent_questions(self.role))

    async def async_init(self) -> None:
        """The older name of :meth:`start`."""
        await self.start()

    async def stop(self) -> None:
        """Stop serving questions and say so (presence ``online: false``)."""
        # Whatever start did is undone, also when it failed half-way (Running.__aenter__ calls
        # stop then).
        if self.messager is None:
            return
        self._cancel_watch()
        self._cancel_watch = lambda: None
        if not self._joined:
            return
        serving = self._subscription is not None
        subs = [self._subscription, self._presence_watch, self._task_gets]
        self._subscription = self._presence_watch = self._task_gets = None
        self._joined = False
        self._cancel_leave()
        try:
            for sub in subs:
                if sub is not None:
                    await self.messager.unsubscribe(sub)
            if serving:
                await self._publish_presence(False)
        except Exception:
            log.warning("could not unsubscribe or publish presence while stopping", exc_info=True)
        # Tasks still running end as canceled, each answered with that error.
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_GRACE_S)
        if self.task_records is not None:
            await self.task_records.flush()
        await self.messager.shared(TaskBoard).leave(self.role)

    async def _on_presence(self, presence: Presence) -> None:
        assert self.messager is not None
        self._presence_holder = presence.client_id if presence.online else None
        # Anything but a live replica's presence is rewritten: offline, another role, or a client
        # that is gone or never said it is online (a forged or stale card would hide this role).
        peers = self.messager.peers
        live = presence.online and presence.role == self.role and peers.online(presence.client_id)
        if not live and self._subscription is not None:
            await self._publish_presence(True)

    async def _repair_presence(self, topic: str) -> None:
        # Something not a presence was retained on the role's status while this agent serves.
        if self._subscription is not None:
            await self._publish_presence(True)

    async def _on_client_gone(self, client_id: str) -> None:
        # The replica whose presence the role's topic holds is gone: this one still serves.
        if client_id == self._presence_holder and self._subscription is not None:
            await self._publish_presence(True)

    async def _publish_presence(self, online: bool) -> None:
        assert self.messager is not None
        presence = Presence(role=self.role, online=online, client_id=self.messager.client_id, card=self.card)
        await self.messager.publish(self.messager.topics.agent_status(self.role), presence, retain=True)

    async def _on_question(self, incoming: IncomingQuestion) -> None:
        assert self.messager is not None
        try:
            question = Question.model_validate(incoming.model_dump())
            topic_level(question.id, "question id")  # it names the question's events topic
        except (ValidationError, InvalidTopicError) as exc:
            problems = describe_validation_error(exc) if isinstance(exc, ValidationError) else str(exc)
            log.warning("invalid question %.64r: %s", incoming.id, problems)
            if incoming.reply_to:
                error = error_info(MalformedMessageError(f"not a valid question: {problems}"))
                request_id = incoming.id if isinstance(incoming.id, str) else None
                await self.messager.reply(incoming, ErrorReply(request_id=request_id, error=error))
            return
        if not question.reply_to:
            log.info("question %s has no reply_to: its answer goes only to the events topic", question.id)
        if len(self._tasks) >= self.max_tasks + self.max_waiting_tasks:
            await self._refuse_busy(question)
            return
        # The task runs on its own: the handler returns at once, so a task waiting for the roles
        # it asked holds no handler their answers need.
        served = asyncio.ensure_future(self._serve(question))
        self._tasks.add(served)
        served.add_done_callback(self._tasks.discard)

    def _task_of(self, question: Question) -> AgentTask:
        assert self.messager is not None
        topic = self.messager.topics.agent_events(self.role, question.id)
        return AgentTask(question, self.role, topic, records=self.task_records)

    async def _refuse_busy(self, question: Question) -> None:
        assert self.messager is not None
        board = self.messager.shared(TaskBoard)
        task = self._task_of(question)
        error = error_info(
            BusyError(f"{self.role} holds {len(self._tasks)} tasks, as many as it may; ask again later")
        )
        await board.status(task, "rejected", error=error)
        if question.reply_to:
            await self.messager.reply(question, ErrorReply(request_id=question.id, error=error))

    async def _serve(self, question: Question) -> None:
        """Answer one question from MQTT as a task: its states published, its owner's cancel and
        its deadline honoured, the answer (or the error) sent to its ``reply_to``. With a store,
        only the replica that claims the question works on it, from the last step a replica that
        died on it recorded."""
        claim: Claim | None = None
        resume: LoopState | None = None
        records = self.conversations.records
        # With a store, the conversation's lease is taken with the question's claim and its
        # history saved with the answer: two round trips a turn instead of four.
        turn: StoreTurn | None = None
        # By sender and id, as the claim: two askers may pick the same question id.
        asked = sender_key(question)
        if records is not None:
            cid = question.conversation_id
            turn = StoreTurn(records.lease(conversation_key(question, cid)) if cid else None)
        try:
            if self.once is not None and self.task_records is not None:
                taken, claim = await self._claim(question, turn.lease if turn is not None else None)
                if not taken:
                    return
                if claim is not None:
                    resume = self.task_records.parse_steps(question.id, claim.also[0], LoopState)
                if resume is not None:
                    log.info(
                        "question %s resumes after step %d of a stopped replica", question.id, resume.steps
                    )
            if turn is not None:
                self._turns[asked] = turn
            await self._work(question, resume, claim, turn)
        finally:
            if turn is not None and self._turns.get(asked) is turn:
                # Only its own: a copy that was not taken ends here while the taken one works.
                del self._turns[asked]
            if claim is not None:
                await claim.release()  # when the work failed before its reply was kept
            if turn is not None:
                await self._let_go(turn)

    async def _let_go(self, turn: StoreTurn) -> None:
        """What a turn still holds when its question ended without keeping an answer (refused,
        cancelled, a duplicate): its lease let go, its history saved if it has one."""
        steps, turn.steps = turn.steps, []
        if turn.lease is not None:
            steps += turn.lease.hand_over()
        if steps and self.conversations.records is not None:
            try:
                await self.conversations.records.store.batch(*steps)
            except StorageError as exc:
                log.warning("could not save a conversation or let its lease go: %s", exc)

    async def _claim(self, question: Question, lease: Lease | None) -> tuple[bool, Claim | None]:
        """Whether this replica works on ``question`` (and its claim): not when another replica
        answered it (its kept reply is sent from here too: this copy may be the one the asker
        still waits on) or works on it until the question expires. A replica that died on it
        lets its claim lapse: this one takes the question over then."""
        assert self.once is not None and self.task_records is not None and self.messager is not None
        expires = question.deadline or question.expires_at
        wait = max(0.0, expires - time.time()) if expires is not None else COPY_WAIT_S
        messager = self.messager

        async def send_kept(kept: Message) -> None:
            if question.reply_to:
                await messager.reply(question, kept)

        return await self.once.take_or_reply(
            f"question:{sender_key(question)}",
            timeout=wait,
            what=f"question {question.id}",
            reply=send_kept,
            # With the claim, the steps a replica that died on the question recorded.
            also=[self.task_records.steps_key(question.id)],
            # The conversation's lease, taken in the same round trip.
            alongside=lease,
        )

    async def _work(
        self, question: Question, resume: LoopState | None, claim: Claim | None, turn: StoreTurn | None
    ) -> None:
        assert self.messager is not None
        started = time.monotonic()
        events = MqttEvents(
            self.messager, self.role, question.id, streaming=question.stream, steps=self.task_records
        )
        task = self._task_of(question)
        board = self.messager.shared(TaskBoard)
        response: Message
        try:
            result = await board.run(
                task,
                lambda: self.answer(question, events=events, resume=resume),
                max_depth=self.max_depth,
                slots=self._slots,
            )
        except asyncio.CancelledError:
            metrics.question_done(self.role, "canceled", time.monotonic() - started)
            # The agent is stopping: the asker learns at once rather than at its timeout.
            if question.reply_to:
                error = error_info(TaskCanceledError(f"the {self.role} agent stopped"))
                with contextlib.suppress(Exception):
                    await self.messager.reply(question, ErrorReply(request_id=question.id, error=error))
            raise
        except Exception as exc:
            log.warning(
                "question %s failed: %s",
                question.id,
                exc,
                exc_info=not isinstance(exc, LLMError | AgentError),
            )
            response = ErrorReply(request_id=question.id, error=error_info(exc))
        else:
            response = Answer(
                question_id=question.id,
                conversation_id=result.conversation_id,
                text=result.text,
                data=result.data.model_dump(mode="json")
                if isinstance(result.data, BaseModel)
                else result.data,
                tool_calls=result.tool_calls,
                usage=result.usage,
                agent=self.role,
            )
        response = await self._keep(
            question, response, claim, turn, dropping_steps=events.recorded or resume is not None
        )
        if question.reply_to:
            await self.messager.reply(question, response)
        outcome = response.error.code if isinstance(response, ErrorReply) else metrics.OK
        metrics.question_done(self.role, outcome, time.monotonic() - started)

    async def _keep(
        self,
        question: Question,
        response: Message,
        claim: Claim | None,
        turn: StoreTurn | None,
        *,
        dropping_steps: bool,
    ) -> Message:
        """The reply kept for duplicates, the answer put on record and the conversation saved
        (with a store), and the conversation's lease let go, in one round trip; the question's
        claim lapses (the kept reply answers copies). The reply to send: an error when the
        conversation could not be saved."""
        if self.once is None or self.task_records is None:
            return response
        steps: list[Step] = [self.once.keep_step(f"question:{sender_key(question)}", response, claim=claim)]
        if dropping_steps:
            steps.append(self.task_records.drop_steps(question.id))
        saving = turn is not None and bool(turn.steps)
        if turn is not None:
            steps, turn.steps = [*turn.steps, *steps], []
        answer = response if isinstance(response, Answer) else None
        try:
            await self.task_records.finish(question.id, answer, steps)
        except StorageError as exc:
            log.warning("could not keep the reply of %s: %s", question.id, exc)
            if saving:  # the next turn would not see this one
                return ErrorReply(request_id=question.id, error=error_info(exc))
        return response

    async def _on_task_get(self, request: TaskGet) -> None:
        """Where a task is, from the record (``task_get``: after a reconnect, from anywhere)."""
        assert self.messager is not None
        if not request.reply_to:
            return
        response: Message
        try:
            record = await self.task_records.get(request.question_id) if self.task_records else None
            if record is None:
                kept = "" if self.task_records else " (this agent keeps no records: it has no store)"
                raise TaskNotFoundError(f"no task {request.question_id!r} on record at {self.role}{kept}")
            response = record
        except Exception as exc:
            response = ErrorReply(request_id=request.id, error=error_info(exc))
        await self.messager.reply(request, response)

    # --- answering ----------------------------------------------------------------------------

    @overload
    async def query(self, text: str, *, conversation_id: str | None = None, output: None = None) -> str: ...

    @overload
    async def query(self, text: str, *, conversation_id: str | None = None, output: type[T]) -> T: ...

    @overload
    async def query(
        self, text: str, *, conversation_id: str | None = None, output: dict[str, Any]
    ) -> Any: ...

    async def query(
        self, text: str, *, conversation_id: str | None = None, output: OutputSpec | None = None
    ) -> Any:
        """Answer ``text``: the answer's text, or with ``output`` the validated structured answer."""
        result = await self.answer(text, conversation_id=conversation_id, output=output)
        return result.data if output is not None else result.text

    async def ask(self, question: Question | str, **options: Any) -> AgentResult:
        """The older name of :meth:`answer` (the whole result; :meth:`query` gives the value)."""
        return await self.answer(question, **options)

    async def answer(
        self,
        question: Question | str,
        *,
        conversation_id: str | None = None,
        output: OutputSpec | None = None,
        events: EventSink | None = None,
        builder: MessageBuilder | None = None,
        resume: LoopState | None = None,
    ) -> AgentResult:
        """The whole answer to one question, in its conversation (a new one unless an id is
        given): text, structured data, tool calls, usage, steps. :meth:`query` gives the value.

        ``builder`` makes this question's messages in place of the agent's ``message_builder``;
        ``resume`` continues an earlier run of the question from its last finished step.
        """
        builder = builder or self.message_builder
        if isinstance(question, str):
            question = Question(text=question, conversation_id=conversation_id)
        if output is None and question.output_schema is not None:
            output = question.output_schema
        sink: EventSink = events or NullEvents()
        await self.apply_profile()
        given = question.conversation_id or conversation_id
        cid = given or new_id()
        key = conversation_key(question, cid)
        # The steps go to the sink; the start and the end are the task's (TaskStatus), or the
        # return value and the exception here.
        attributes = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": self.role,
            "gen_ai.conversation.id": cid,
            "argentic.question.id": question.id,
        }
        # A child of the asker's span when it traces (its traceparent came with the question).
        with tracing.span(f"invoke_agent {self.role}", attributes, traceparent=question.traceparent):
            turn = self._turns.get(sender_key(question))
            async with self.conversations.open(key, new=given is None, turn=turn) as conversation:
                user = await builder.build(question)
                prompt = [*self.system_messages(), *conversation.messages, user]
                result = await self.tool_loop(builder, sink).run(prompt, output=output, resume=resume)
                conversation.messages.extend([builder.remember(user), *result.messages])
        return AgentResult(
            question.id, cid, result.text, result.data, result.tool_calls, result.usage, result.steps
        )

    # --- the steps of a question ----------------------------------------------------------------

    def system_messages(self) -> list[ChatMessage]:
        return [ChatMessage.system(self.system_prompt)] if self.system_prompt else []

    def tool_loop(self, builder: MessageBuilder, events: EventSink) -> ToolLoop:
        """The loop for one question; each of its model requests is first given to ``builder.prepare``."""

        async def call_llm(request: ChatRequest, events: EventSink) -> ChatResponse:
            messages = builder.prepare(request.messages)
            if messages is not request.messages:
                request = request.model_copy(update={"messages": messages})
            return await self.call_llm(request, events)

        return ToolLoop(call_llm, self.call_tool, self.tool_definitions(), self.policy, events)

    def tool_definitions(self) -> list[ToolDefinition]:
        """The tools the model is offered: the local ones, the announced ones it may use, then
        those that ask its delegates or its asker."""
        tools = self.local_tools.definitions()
        if self.tool_manager is not None:
            remote = self.tool_manager.definitions(self.tool_names)
            tools += [d for d in remote if d.name not in self.local_tools]
        return tools + self.delegation.definitions() if self.delegation is not None else tools

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> ToolResult:
        """Where a tool runs: asking a delegate or the asker over MQTT, in this process when it
        is a local tool, else at a tool service over MQTT."""
        if self.delegation is not None and self.delegation.handles(name):
            return await self.delegation.call(name, arguments)
        if name in self.local_tools:
            return await self.local_tools.call(name, arguments, timeout=self.tool_timeout_s)
        if self.tool_manager is None:
            message = f"no tool {name!r}" if self.local_tools else "this agent has no tools"
            return failed_result(name, UnknownToolError(message))
        if self.tool_names is not None and name not in self.tool_names:
            return failed_result(name, UnknownToolError(f"tool {name!r} is not available to this agent"))
        return await self.tool_manager.call(name, arguments, timeout=self.tool_timeout_s)

    async def call_llm(self, request: ChatRequest, events: EventSink) -> ChatResponse:
        """The one place the model is called: streamed (tokens to ``events``) when asked; the
        agent's sampling settings apply unless the request has its own. Each call is measured
        (duration, tokens, time to the first streamed event)."""
        if self.settings is not None and request.settings is None:
            request = request.model_copy(update={"settings": self.settings})
        started = time.monotonic()
        first: list[float] = []  # the time of the first streamed event, once it came
        model = self.llm.model_name
        attributes = {"gen_ai.operation.name": "chat", "gen_ai.request.model": model}
        with tracing.span(f"chat {model}".strip(), attributes, kind="client") as current:
            try:
                response = await self._call_llm(request, events, first)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                metrics.model_call_done(
                    model,
                    error_info(exc).code,
                    time.monotonic() - started,
                    first_token_s=first[0] - started if first else None,
                )
                raise
            tracing.set_attributes(
                current,
                {
                    "gen_ai.response.model": response.model or None,
                    "gen_ai.usage.input_tokens": response.usage.prompt_tokens,
                    "gen_ai.usage.output_tokens": response.usage.completion_tokens,
                    "gen_ai.response.finish_reasons": [response.finish_reason]
                    if response.finish_reason
                    else None,
                },
            )
        metrics.model_call_done(
            model or response.model,
            metrics.OK,
            time.monotonic() - started,
            input_tokens=response.usage.prompt_tokens,
            output_tokens=response.usage.completion_tokens,
            first_token_s=first[0] - started if first else None,
        )
        return response

    async def _call_llm(self, request: ChatRequest, events: EventSink, first: list[float]) -> ChatResponse:
        if not events.streaming:
            return await self.llm.chat(request)
        final: ChatResponse | None = None
        async for event in self.llm.stream(request):
            if not first:
                first.append(time.monotonic())
            if isinstance(event, TextDelta) and event.text:
                await events.token(event.text)
            elif isinstance(event, StreamEnd):
                final = event.response
        if final is None:
            raise LLMError("the model's stream ended without a final reply")
        return final
