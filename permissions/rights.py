"""The rights on nodes and what each implies: operating or administering a node includes
seeing it."""

VIEW = "view_node"
OPERATE = "operate_node"
ADMIN = "admin_node"
PERMISSIONS = (VIEW, OPERATE, ADMIN)

# A right is held on a node if any of these is granted on it or on an ancestor.
GRANTS_IMPLYING: dict[str, tuple[str, ...]] = {
    VIEW: (VIEW, OPERATE, ADMIN),
    OPERATE: (OPERATE,),
    ADMIN: (ADMIN,),
}


def qualified(codename: str) -> str:
    return f"permissions.{codename}"
