"""The requests Microsoft Entra ID sends, as bytes and URLs the load generator can replay.

Shapes follow shared/reference/entra-scim.md: the create body carries all 19 rows of the mapping
table, updates are the default job's one ``Replace`` per changed attribute, disables send
``active`` as the string ``"False"``, and group members arrive in ``Add`` batches.

Bodies are built from a JSON template compiled once, so making one costs a string substitution
instead of a ``json.dumps``: the client shares the machine's two cores with the server under test,
and at 100,000 users nothing per-user is kept in memory.
"""

from __future__ import annotations

import json
import uuid
from string import Template
from urllib.parse import quote_plus

CORE_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE_USER = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
CORE_GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
AD_GROUP = "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
LIST_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
SCIM_JSON = "application/scim+json"
MEMBER_BATCH = 50

# Written as text, one word per name, to keep the lists short on screen.
GIVEN_NAMES_TEXT = (
    "Ana Ben Chloe David Elif Farid Greta Hugo Ines Jonas Kaito Lena Mateo Nora Omar Priya "
    "Quinn Rosa Sami Tara Umar Vera Wen Xavier Yara Zoltan Amir Bea Carl Dana Emil Freya"
)
FAMILY_NAMES_TEXT = (
    "Berg Costa Dubois Eriksen Fischer Garcia Hansen Ito Jensen Kowalski Larsen Moreau Novak "
    "Okafor Petrov Quist Rossi Sato Tanaka Ulrich Vogel Weber Xu Yilmaz Zimmer Andersson Bauer "
    "Castro Dahl Engel Ferreira Gruber Horvat Ivanova Jansen Keller Lindqvist Meyer Nilsson "
    "Olsen Park Ramos Schmidt Takahashi Urban Varga Wagner Young Zhang Abbott Brandt Cohen Diaz"
)
GIVEN_NAMES = tuple(GIVEN_NAMES_TEXT.split())
FAMILY_NAMES = tuple(FAMILY_NAMES_TEXT.split())
CITIES = (
    ("Redmond", "WA", "98052", "US"),
    ("Stockholm", "Stockholms län", "111 51", "SE"),
    ("München", "Bayern", "80331", "DE"),
    ("Lisboa", "Lisboa", "1100-148", "PT"),
)
DEPARTMENTS = (
    "Platform Engineering",
    "Enterprise Sales",
    "Corporate Finance",
    "Applied Research",
    "Customer Support",
    "Legal and Compliance",
    "Operations",
)
TITLES = (
    "Staff Software Engineer",
    "Senior Account Executive",
    "Financial Analyst",
    "Research Scientist",
    "Support Agent",
    "Corporate Counsel",
)
LANGUAGES = ("en-US", "sv-SE", "de-DE", "pt-PT")


def _template(document: dict) -> Template:
    """A JSON document whose ``$name`` strings become substitution points.

    ``ensure_ascii=False`` keeps non-ASCII values as text; the template is encoded once per body.
    """
    return Template(json.dumps(document, ensure_ascii=False))


USER_BODY = _template(
    {
        "schemas": [CORE_USER, ENTERPRISE_USER],
        "externalId": "$external_id",
        "userName": "$user_name",
        "active": True,
        "displayName": "$display_name",
        "title": "$title",
        "preferredLanguage": "$language",
        "emails": [{"primary": True, "type": "work", "value": "$user_name"}],
        "phoneNumbers": [
            {"primary": True, "type": "work", "value": "+1 (425) 555-$phone"},
            {"type": "mobile", "value": "+1 206-555-$phone"},
        ],
        "addresses": [
            {
                "primary": True,
                "type": "work",
                "formatted": "Building $building, Floor $floor",
                "streetAddress": "$street Northeast Thirty-Sixth Street",
                "locality": "$locality",
                "region": "$region",
                "postalCode": "$postal_code",
                "country": "$country",
            }
        ],
        "meta": {"resourceType": "User"},
        "name": {"formatted": "$display_name", "familyName": "$family", "givenName": "$given"},
        "roles": [],
        ENTERPRISE_USER: {
            "employeeNumber": "E$employee",
            "costCenter": "CC-$cost_center",
            "department": "$department",
            "manager": {"value": "$manager"},
        },
    }
)
# The same body for a user whose manager is not provisioned yet: Entra links it later by PATCH.
USER_BODY_NO_MANAGER = Template(
    USER_BODY.template.replace(', "manager": {"value": "$manager"}', "")
)

UPDATE_BODY = _template(
    {
        "schemas": [PATCH_OP],
        "Operations": [
            {"op": "Replace", "path": "title", "value": "$title"},
            {"op": "Replace", "path": f"{ENTERPRISE_USER}:department", "value": "$department"},
            {"op": "Replace", "path": 'phoneNumbers[type eq "mobile"].value', "value": "$mobile"},
        ],
    }
)
DISABLE_BODY = json.dumps(
    {"schemas": [PATCH_OP], "Operations": [{"op": "Replace", "path": "active", "value": "False"}]}
).encode()


def given_name(index: int) -> str:
    return GIVEN_NAMES[index % len(GIVEN_NAMES)]


def family_name(index: int) -> str:
    return FAMILY_NAMES[(index // len(GIVEN_NAMES)) % len(FAMILY_NAMES)]


def display_name(index: int) -> str:
    """Names repeat every 1,696 users (about 59 namesakes at 100,000); userName stays unique."""
    return f"{given_name(index)} {family_name(index)}"


def user_name(index: int) -> str:
    return f"{given_name(index)}.{family_name(index)}.{index}@contoso.example".lower()


def external_id(index: int) -> str:
    """A stable GUID per user, standing in for the Entra objectId."""
    return str(uuid.UUID(int=(0xB3C4 << 112) | index))


def manager_index(index: int) -> int | None:
    """Every 25th user manages a team of users provisioned at least 100 creates later.

    The gap means the manager's 201 has come back before the report's POST is built, even with
    several clients, so the POST carries a real id as Entra's would.
    """
    return None if index < 100 else (index - 100) // 25 * 25


def user_body(index: int, manager_id: str | None) -> bytes:
    """POST /Users with all 19 mapped attributes (~1.4 KB)."""
    city = CITIES[index % len(CITIES)]
    values = {
        "external_id": external_id(index),
        "user_name": user_name(index),
        "display_name": display_name(index),
        "given": given_name(index),
        "family": family_name(index),
        "title": TITLES[index % len(TITLES)],
        "language": LANGUAGES[index % len(LANGUAGES)],
        "phone": f"{index % 10000:04d}",
        "street": str(index % 900 + 1),
        "building": str(index % 120 + 1),
        "floor": str(index % 7 + 1),
        "locality": city[0],
        "region": city[1],
        "postal_code": city[2],
        "country": city[3],
        "employee": f"{index:07d}",
        "cost_center": str(index % 97),
        "department": DEPARTMENTS[index % len(DEPARTMENTS)],
        "manager": manager_id or "",
    }
    template = USER_BODY if manager_id else USER_BODY_NO_MANAGER
    return template.substitute(values).encode()


def update_body(index: int) -> bytes:
    """The default job's PATCH for a user whose job, department and mobile changed."""
    return UPDATE_BODY.substitute(
        title=TITLES[(index + 1) % len(TITLES)],
        department=DEPARTMENTS[(index + 1) % len(DEPARTMENTS)],
        mobile=f"+1 206-555-{(index + 1) % 10000:04d}",
    ).encode()


def filter_query(expression: str) -> str:
    """Form-encoded as Entra sends it: ``filter=userName+eq+%22...%22``."""
    return f"filter={quote_plus(expression)}"


def user_name_query(index: int) -> str:
    return filter_query(f'userName eq "{user_name(index)}"')


def display_name_search(index: int) -> str:
    return filter_query(f'displayName co "{display_name(index)}"')


def group_name(index: int) -> str:
    return f"Bench group {index:05d}"


def group_query(index: int) -> str:
    """Entra reads groups without their members."""
    return filter_query(f'displayName eq "{group_name(index)}"') + "&excludedAttributes=members"


def group_body(index: int) -> bytes:
    """POST /Groups: Entra creates a group empty, then adds members by PATCH."""
    return json.dumps(
        {
            "schemas": [CORE_GROUP, AD_GROUP],
            "externalId": str(uuid.UUID(int=(0x6A0 << 112) | index)),
            "displayName": group_name(index),
            "members": [],
        }
    ).encode()


def add_members_body(member_ids: list[str]) -> bytes:
    """One ``Add`` of up to 50 members, with Entra's ``"$ref": null`` on each."""
    members = [{"$ref": None, "value": member_id} for member_id in member_ids]
    operation = {"op": "Add", "path": "members", "value": members}
    return json.dumps({"schemas": [PATCH_OP], "Operations": [operation]}).encode()
