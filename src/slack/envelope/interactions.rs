//! Interactivity payloads (`interactive` envelopes), parsed into the closed
//! [`InteractionKind`] enum.
//!
//! Pure: JSON in, typed value out, never a panic. Knows button clicks and menu choices
//! (`block_actions`) and modals (`view_submission`, `view_closed`); shortcuts and the
//! rest are [`InteractionKind::Unknown`]. A known interaction missing a field it needs
//! is a [`FieldError`] naming that field. Decides nothing about what a click means: that
//! is `app::dispatch`'s.

use serde_json::Value;

use super::fields::{FieldError, Fields, PayloadError};

/// An interaction and who made it where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interaction {
    /// The workspace: `team.id`, else the user's `team_id` (an org-wide install in an
    /// Enterprise Grid org may send no team).
    pub team_id: Option<String>,
    /// The Enterprise Grid org, for an org-wide install (`enterprise.id`).
    pub enterprise_id: Option<String>,
    pub kind: InteractionKind,
}

/// Every interaction the app reads, and the rest as [`InteractionKind::Unknown`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InteractionKind {
    /// Buttons clicked or options chosen in a message, a modal or the Home tab. (The
    /// large payloads are boxed so that every frame stays small until it is parsed.)
    BlockActions(Box<BlockActions>),
    /// A modal's submit button.
    ViewSubmission { user: String, view: Box<View> },
    /// A modal closed with Cancel or ×, when it asked to be told (`notify_on_close`).
    ViewClosed {
        user: String,
        view: Box<View>,
        /// The whole stack of modals was closed, not only this one.
        is_cleared: bool,
    },
    /// An interaction nothing here reads (shortcuts and the like): its `type`.
    Unknown { type_name: String },
}

impl InteractionKind {
    /// The interaction's `type` as Slack sends it.
    pub fn type_name(&self) -> &str {
        match self {
            InteractionKind::BlockActions(_) => "block_actions",
            InteractionKind::ViewSubmission { .. } => "view_submission",
            InteractionKind::ViewClosed { .. } => "view_closed",
            InteractionKind::Unknown { type_name } => type_name,
        }
    }
}

/// A `block_actions` payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockActions {
    /// Who clicked.
    pub user: String,
    /// The channel of the message clicked (`channel.id`, else `container.channel_id`);
    /// None in a modal or the Home tab.
    pub channel: Option<String>,
    /// The ts of the message clicked (`container.message_ts`, else `message.ts`).
    pub message_ts: Option<String>,
    /// Where to answer; None when Slack sent none or an empty one (modals, Home tab).
    pub response_url: Option<String>,
    /// Opens a modal within about three seconds of the click.
    pub trigger_id: String,
    pub actions: Vec<BlockAction>,
    /// The modal or Home tab clicked in, with its inputs' state.
    pub view: Option<View>,
    /// The clicked message's section texts (`message.blocks[].text.text` of its section
    /// blocks), in order, so a handler can show the message again with a change; empty
    /// when the click was not in a message.
    pub message_sections: Vec<String>,
}

/// One element clicked or changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockAction {
    pub action_id: String,
    pub block_id: Option<String>,
    /// A button's value.
    pub value: Option<String>,
    /// A single select's chosen option (its `value`).
    pub selected_option: Option<String>,
}

/// A modal or Home tab, as an interaction carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub id: String,
    pub view_type: ViewType,
    /// Empty when the view was opened without one.
    pub callback_id: String,
    /// What the app stored in the view when opening it; empty when nothing.
    pub private_metadata: String,
    /// Every input's state (`state.values`), in block then action order.
    pub inputs: Vec<ViewInput>,
}

impl View {
    /// The state of the input `action_id` in the block `block_id`.
    pub fn input(&self, block_id: &str, action_id: &str) -> Option<&InputValue> {
        self.inputs
            .iter()
            .find(|input| input.block_id == block_id && input.action_id == action_id)
            .map(|input| &input.value)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewType {
    Modal,
    Home,
    Other(String),
}

impl ViewType {
    fn from_wire(view_type: String) -> Self {
        match view_type.as_str() {
            "modal" => ViewType::Modal,
            "home" => ViewType::Home,
            _ => ViewType::Other(view_type),
        }
    }
}

/// One input of a view's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewInput {
    pub block_id: String,
    pub action_id: String,
    pub value: InputValue,
}

/// What an input holds, by the kind of element it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputValue {
    /// A text, email, URL or number input; None when left empty.
    Text(Option<String>),
    /// A single choice: a select's or radio button's option value, or the user,
    /// channel, conversation, date or time picked. None when nothing is chosen.
    Choice(Option<String>),
    /// The choices of a multi-select or checkboxes.
    Choices(Vec<String>),
    /// An element this does not read, by its `type`.
    Other { element_type: String },
}

/// The interaction of an `interactive` payload. `Ok(None)` when there is no `type` to
/// go by.
pub(super) fn parse_interaction(payload: &Value) -> Result<Option<Interaction>, PayloadError> {
    let root = Fields::root(payload);
    let type_name = match root.optional_text("type") {
        Ok(Some(type_name)) => type_name,
        Ok(None) => return Ok(None),
        Err(error) => {
            return Err(PayloadError {
                type_name: "interactive".into(),
                error,
            });
        }
    };
    let interaction = || {
        Ok(Interaction {
            team_id: first_of(&root, &["team.id", "user.team_id"])?,
            enterprise_id: first_of(&root, &["enterprise.id", "team.enterprise_id"])?,
            kind: parse_kind(&root, type_name.clone())?,
        })
    };
    interaction().map(Some).map_err(|error| PayloadError {
        type_name: type_name.clone(),
        error,
    })
}

fn parse_kind(root: &Fields<'_>, type_name: String) -> Result<InteractionKind, FieldError> {
    Ok(match type_name.as_str() {
        "block_actions" => InteractionKind::BlockActions(Box::new(BlockActions {
            user: root.text("user.id")?,
            channel: first_of(root, &["channel.id", "container.channel_id"])?,
            message_ts: first_of(root, &["container.message_ts", "message.ts"])?,
            response_url: root.non_empty_text("response_url")?,
            trigger_id: root.text("trigger_id")?,
            actions: root
                .objects("actions")?
                .iter()
                .map(|action| {
                    Ok(BlockAction {
                        action_id: action.text("action_id")?,
                        block_id: action.optional_text("block_id")?,
                        value: action.optional_text("value")?,
                        selected_option: action.optional_text("selected_option.value")?,
                    })
                })
                .collect::<Result<_, FieldError>>()?,
            view: root.optional_object("view")?.map(parse_view).transpose()?,
            message_sections: message_sections(root)?,
        })),
        "view_submission" => InteractionKind::ViewSubmission {
            user: root.text("user.id")?,
            view: Box::new(parse_view(root.object("view")?)?),
        },
        "view_closed" => InteractionKind::ViewClosed {
            user: root.text("user.id")?,
            view: Box::new(parse_view(root.object("view")?)?),
            is_cleared: root.flag("is_cleared")?,
        },
        _ => InteractionKind::Unknown { type_name },
    })
}

/// The section texts of the clicked message, when there is one.
fn message_sections(root: &Fields<'_>) -> Result<Vec<String>, FieldError> {
    let mut sections = Vec::new();
    for block in root.optional_objects("message.blocks")? {
        if block.optional_text("type")?.as_deref() == Some("section") {
            if let Some(text) = block.optional_text("text.text")? {
                sections.push(text);
            }
        }
    }
    Ok(sections)
}

/// The first of `paths` that is there.
fn first_of(fields: &Fields<'_>, paths: &[&str]) -> Result<Option<String>, FieldError> {
    for path in paths {
        if let Some(text) = fields.optional_text(path)? {
            return Ok(Some(text));
        }
    }
    Ok(None)
}

fn parse_view(view: Fields<'_>) -> Result<View, FieldError> {
    let mut inputs = Vec::new();
    for (block_id, block) in view.members("state.values")? {
        for (action_id, element) in block.entries()? {
            inputs.push(ViewInput {
                value: input_value(&element)?,
                block_id: block_id.clone(),
                action_id,
            });
        }
    }
    Ok(View {
        id: view.text("id")?,
        view_type: ViewType::from_wire(view.text("type")?),
        callback_id: view.text("callback_id")?,
        private_metadata: view.text("private_metadata")?,
        inputs,
    })
}

/// Where each kind of element keeps its value in a view's state.
fn input_value(element: &Fields<'_>) -> Result<InputValue, FieldError> {
    let element_type = element.text("type")?;
    Ok(match element_type.as_str() {
        "plain_text_input" | "email_text_input" | "url_text_input" | "number_input" => {
            InputValue::Text(element.non_empty_text("value")?)
        }
        "static_select" | "external_select" | "radio_buttons" => {
            InputValue::Choice(element.optional_text("selected_option.value")?)
        }
        "users_select" => InputValue::Choice(element.optional_text("selected_user")?),
        "channels_select" => InputValue::Choice(element.optional_text("selected_channel")?),
        "conversations_select" => {
            InputValue::Choice(element.optional_text("selected_conversation")?)
        }
        "datepicker" => InputValue::Choice(element.optional_text("selected_date")?),
        "timepicker" => InputValue::Choice(element.optional_text("selected_time")?),
        "multi_static_select" | "multi_external_select" | "checkboxes" => {
            let chosen = element.optional_objects("selected_options")?;
            InputValue::Choices(
                chosen
                    .iter()
                    .map(|option| option.text("value"))
                    .collect::<Result<_, _>>()?,
            )
        }
        "multi_users_select" => InputValue::Choices(element.texts("selected_users")?),
        "multi_channels_select" => InputValue::Choices(element.texts("selected_channels")?),
        "multi_conversations_select" => {
            InputValue::Choices(element.texts("selected_conversations")?)
        }
        _ => InputValue::Other { element_type },
    })
}
